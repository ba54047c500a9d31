//! The vGPU register map (paper §3.3 "MMIO ... trap-and-emulate", §3.6 PM
//! registers), declared once.
//!
//! Every register that the mediator treats specially is one line of the
//! [`register!`] table below: its name (which also becomes a `pub const` with
//! the register's BAR0 offset), its width, its offset (and for register arrays
//! the element count and stride), its documentation and its [`RegKind`] — the
//! policy [`super::mmio`] applies to a guest access.  Everything else inside the
//! 2 MiB register range is a plain virtual register (GVT-g behaviour: unknown
//! registers are kept in the vreg file and never reach hardware); the MMIO
//! dispatcher counts such accesses.
//!
//! Lookup is a binary search over the table ([`lookup`]); the table's
//! sortedness, alignment and bounds are checked at compile time (a `const`
//! assertion), so a badly placed line does not build.
//!
//! Offsets follow Intel's (Gen7/Gen8 naming) where gvt-sim has a counterpart,
//! see docs/gvt-sim.md §3 "Register map":
//! - rings: RCS at 0x2000, BCS at 0x22000; TAIL +0x30, HEAD +0x34, START +0x38,
//!   CTL +0x3C, HWS_PGA +0x80, HWSTAM +0x98, PP_DIR_DCLV +0x220,
//!   PP_DIR_BASE +0x228 (Intel `RING_*(base)` macros);
//! - GT interrupts: Intel's Gen6/7 `GTIMR`/`GTIIR`/`GTIER` at
//!   0x44014/0x44018/0x4401C, bits as [`super::irq`] (Intel's `GT_*_INTERRUPT`);
//! - GDRST 0x941C (Intel `GEN6_GDRST`), forcewake request 0xA188
//!   (`FORCEWAKE_MT`, a masked register) and ack 0x130044 (`FORCEWAKE_ACK_HSW`);
//! - fences: 16 × 64-bit at 0x100000 (`FENCE_REG_GEN6_LO(i)`);
//! - display: PIPEASRC 0x6001C, DSPACNTR 0x70180, DSPASTRIDE 0x70188,
//!   DSPASURF 0x7019C; the display-engine interrupts of Ivybridge
//!   (`DEISR`/`DEIMR`/`DEIIR`/`DEIER` at 0x44000/0x44004/0x44008/0x4400C,
//!   pipe A vblank on bit 0) for the vblank interrupt ([`super::vblank`]);
//!   the pipe A frame counter `PIPE_FRMCOUNT_G4X` 0x70040 is a plain vreg
//!   kept by [`super::vblank`]; cursor A `CURACNTR`/`CURABASE`/`CURAPOS` at
//!   0x70080/0x70084/0x70088 ([`super::display`]'s cursor plane).
//!
//! The PVINFO page (0x78000, [`super::pvinfo`]) and the guest GGTT view
//! (8–16 MiB of BAR0) are windows of BAR0 handled by their own modules, not
//! registers of this table (the compile-time check keeps the table out of the
//! PVINFO window).

use super::backend::EngineId;

/// Size of the register part of BAR0: `[0, 2 MiB)`.
pub const REG_RANGE: u32 = 0x20_0000;
/// Dwords of virtual register state per vGPU (the glue allocates
/// `VREG_DWORDS` `u32`s, 2 MiB, like GVT-g's `vreg`).
pub const VREG_DWORDS: usize = (REG_RANGE / 4) as usize;

/// Which display register (one primary plane per vGPU, docs/gvt-sim.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisplayReg {
    /// DSPACNTR: plane control ([`PlaneCtl`]).
    PlaneCtl,
    /// DSPASTRIDE: bytes per line.
    PlaneStride,
    /// DSPASURF: GGTT address of the surface (a write is a flip).
    PlaneSurf,
    /// PIPEASRC: source size ([`PipeSrc`]).
    PipeSrc,
    /// DEIMR: display-engine interrupt mask ([`super::irq::DE_PIPEA_VBLANK`]).
    DeImr,
    /// DEIIR: display-engine interrupt identity, write one to clear.
    DeIir,
    /// DEIER: display-engine interrupt enable.
    DeIer,
    /// CURACNTR: cursor A control (mode, [`super::display::CursorMode`]).
    CursorCtl,
    /// CURABASE: GGTT address of the cursor image.
    CursorBase,
    /// CURAPOS: cursor position (sign + magnitude per axis).
    CursorPos,
}

/// The policy the MMIO dispatcher applies to a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegKind {
    /// Plain virtual register: reads return what the guest wrote.
    Scratch,
    /// Read-only, always reads as the value; writes are dropped.
    ReadOnly(u32),
    /// Ring tail: a write is a submission (paper §3.4), reported to the caller.
    RingTail(EngineId),
    /// Ring head: virtual, updated by the submission mediator as it executes.
    RingHead(EngineId),
    /// Ring start (GGTT address of the ring buffer): virtual, read at submission.
    RingStart(EngineId),
    /// Ring control ([`RingCtl`]): virtual, read at submission.
    RingCtl(EngineId),
    /// Hardware status page address: virtual, read by the submission mediator.
    HwsPga(EngineId),
    /// PPGTT root (page-directory base, paper §3.3.2): a write is reported.
    PpDirBase(EngineId),
    /// GT interrupt identity: write-one-to-clear; a write is reported.
    Iir,
    /// GT interrupt mask: a write is reported.
    Imr,
    /// GT interrupt enable: a write is reported.
    Ier,
    /// Graphics device reset ([`Gdrst`]): a write is reported; the register
    /// reads back 0 (the reset completes before the write returns).
    Gdrst,
    /// Forcewake request (masked register): emulated, never reaches hardware
    /// (paper §3.6); the ack mirrors it.
    ForcewakeReq,
    /// Forcewake ack: read-only mirror of the request's low 16 bits.
    ForcewakeAck,
    /// Fence register (64-bit, array): a write is reported with the index.
    Fence,
    /// Display register: a write is reported.
    Display(DisplayReg),
}

/// Width of a register: how many dwords one element spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    U32,
    U64,
}

impl Width {
    pub const fn dwords(self) -> u32 {
        match self {
            Width::U32 => 1,
            Width::U64 => 2,
        }
    }
}

/// One line of the register table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegDesc {
    /// The register's name (as declared, Intel-like).
    pub name: &'static str,
    /// BAR0 offset of the (first element of the) register.
    pub offset: u32,
    /// Elements of a register array (1 for a single register).
    pub count: u32,
    /// Bytes between array elements.
    pub stride: u32,
    pub width: Width,
    pub kind: RegKind,
    /// The declaration's documentation.
    pub doc: &'static str,
}

impl RegDesc {
    /// Bytes the register (array) spans from `offset`.
    pub const fn span(&self) -> u32 {
        if self.count <= 1 {
            self.width.dwords() * 4
        } else {
            (self.count - 1) * self.stride + self.width.dwords() * 4
        }
    }
    /// One past the last byte.
    pub const fn end(&self) -> u32 {
        self.offset + self.span()
    }
}

/// Where a dword offset landed in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegHit {
    pub desc: &'static RegDesc,
    /// Array element (0 for a single register).
    pub index: u32,
    /// Dword within the element (1 = high half of a 64-bit register).
    pub dword: u32,
}

impl RegHit {
    pub fn kind(&self) -> RegKind {
        self.desc.kind
    }
    /// BAR0 offset of the element's first dword.
    pub fn element_offset(&self) -> u32 {
        self.desc.offset.wrapping_add(self.index.wrapping_mul(self.desc.stride))
    }
}

/// Declares the register table: for every line a `pub const NAME: u32` with
/// its offset (and the line's doc), and one entry of [`REGISTERS`].
///
/// ```text
/// /// doc
/// NAME(u32|u64) @ OFFSET [COUNT; STRIDE]? => KIND;
/// ```
/// `KIND` is a [`RegKind`] expression with the variants in scope.
macro_rules! register {
    (@or $default:literal) => { $default };
    (@or $default:literal, $v:literal) => { $v };
    (@width u32) => { Width::U32 };
    (@width u64) => { Width::U64 };
    ($(
        $(#[doc = $doc:literal])+
        $name:ident($w:ident) @ $off:literal $([$count:literal; $stride:literal])? => $kind:expr;
    )*) => {
        $(
            $(#[doc = $doc])+
            pub const $name: u32 = $off;
        )*
        /// The register table, sorted by offset (checked at compile time).
        pub const REGISTERS: &[RegDesc] = &[$(
            RegDesc {
                name: stringify!($name),
                offset: $off,
                count: register!(@or 1 $(, $count)?),
                stride: register!(@or 0 $(, $stride)?),
                width: register!(@width $w),
                kind: {
                    #[allow(unused_imports)]
                    use RegKind::*;
                    $kind
                },
                doc: concat!($($doc, "\n"),+),
            },
        )*];
    };
}

register! {
    /// RCS ring tail (`RING_TAIL(RENDER_RING_BASE)`): a write submits [HEAD, TAIL).
    RCS_RING_TAIL(u32) @ 0x2030 => RingTail(EngineId::Rcs);
    /// RCS ring head (`RING_HEAD`): where the engine is in the ring.
    RCS_RING_HEAD(u32) @ 0x2034 => RingHead(EngineId::Rcs);
    /// RCS ring start (`RING_START`): GGTT address of the ring buffer.
    RCS_RING_START(u32) @ 0x2038 => RingStart(EngineId::Rcs);
    /// RCS ring control (`RING_CTL`): enable, length.
    RCS_RING_CTL(u32) @ 0x203C => RingCtl(EngineId::Rcs);
    /// RCS hardware status page address (`RING_HWS_PGA`).
    RCS_HWS_PGA(u32) @ 0x2080 => HwsPga(EngineId::Rcs);
    /// RCS hardware status mask (`RING_HWSTAM`): plain virtual register.
    RCS_HWSTAM(u32) @ 0x2098 => Scratch;
    /// RCS PPGTT directory cacheline valid (`RING_PP_DIR_DCLV`): virtual.
    RCS_PP_DIR_DCLV(u32) @ 0x2220 => Scratch;
    /// RCS PPGTT page-directory base (`RING_PP_DIR_BASE`): the PPGTT root.
    RCS_PP_DIR_BASE(u32) @ 0x2228 => PpDirBase(EngineId::Rcs);
    /// Graphics device reset (`GEN6_GDRST`), bits as [`Gdrst`].
    GDRST(u32) @ 0x941C => Gdrst;
    /// Forcewake request (`FORCEWAKE_MT`, masked: bits 31:16 select bits 15:0).
    FORCEWAKE_REQ(u32) @ 0xA188 => ForcewakeReq;
    /// BCS ring tail: a write submits [HEAD, TAIL).
    BCS_RING_TAIL(u32) @ 0x22030 => RingTail(EngineId::Bcs);
    /// BCS ring head.
    BCS_RING_HEAD(u32) @ 0x22034 => RingHead(EngineId::Bcs);
    /// BCS ring start: GGTT address of the ring buffer.
    BCS_RING_START(u32) @ 0x22038 => RingStart(EngineId::Bcs);
    /// BCS ring control: enable, length.
    BCS_RING_CTL(u32) @ 0x2203C => RingCtl(EngineId::Bcs);
    /// BCS hardware status page address.
    BCS_HWS_PGA(u32) @ 0x22080 => HwsPga(EngineId::Bcs);
    /// BCS hardware status mask: plain virtual register.
    BCS_HWSTAM(u32) @ 0x22098 => Scratch;
    /// BCS PPGTT directory cacheline valid: virtual.
    BCS_PP_DIR_DCLV(u32) @ 0x22220 => Scratch;
    /// BCS PPGTT page-directory base (gvt-sim's blitter uses the GGTT only;
    /// the register is still mediated so a guest cannot slip a root past us).
    BCS_PP_DIR_BASE(u32) @ 0x22228 => PpDirBase(EngineId::Bcs);
    /// Display-engine interrupt status (`DEISR`, Ivybridge): no live level.
    DE_ISR(u32) @ 0x44000 => ReadOnly(0);
    /// Display-engine interrupt mask (`DEIMR`): bit 0 pipe A vblank
    /// (`DE_PIPEA_VBLANK_IVB`, [`super::irq::DE_PIPEA_VBLANK`]); the vblank
    /// model is [`super::vblank`].
    DE_IMR(u32) @ 0x44004 => Display(DisplayReg::DeImr);
    /// Display-engine interrupt identity (`DEIIR`), write one to clear.
    DE_IIR(u32) @ 0x44008 => Display(DisplayReg::DeIir);
    /// Display-engine interrupt enable (`DEIER`).
    DE_IER(u32) @ 0x4400C => Display(DisplayReg::DeIer);
    /// GT interrupt status (`GTISR`): every gvt-sim event is a pulse, no
    /// live level (see [`super::irq`]).
    GT_ISR(u32) @ 0x44010 => ReadOnly(0);
    /// GT interrupt mask (`GTIMR`), bits as [`super::irq`].
    GT_IMR(u32) @ 0x44014 => Imr;
    /// GT interrupt identity (`GTIIR`), write one to clear.
    GT_IIR(u32) @ 0x44018 => Iir;
    /// GT interrupt enable (`GTIER`).
    GT_IER(u32) @ 0x4401C => Ier;
    /// Pipe A source size (`PIPESRC(PIPE_A)`): (width-1)<<16 | (height-1).
    PIPEASRC(u32) @ 0x6001C => Display(DisplayReg::PipeSrc);
    /// Cursor A control (`CURCNTR(PIPE_A)`, i9xx): bits 5:0 the mode
    /// ([`super::display::CursorMode`]; 0 disabled).
    CURACNTR(u32) @ 0x70080 => Display(DisplayReg::CursorCtl);
    /// Cursor A image GGTT address (`CURBASE`), 4 KiB aligned.
    CURABASE(u32) @ 0x70084 => Display(DisplayReg::CursorBase);
    /// Cursor A position (`CURPOS`): x in bits 14:0 with sign bit 15, y in
    /// bits 30:16 with sign bit 31.
    CURAPOS(u32) @ 0x70088 => Display(DisplayReg::CursorPos);
    /// Primary plane A control (`DSPCNTR(PLANE_A)`), bits as [`PlaneCtl`].
    DSPACNTR(u32) @ 0x70180 => Display(DisplayReg::PlaneCtl);
    /// Primary plane A stride in bytes (`DSPSTRIDE`).
    DSPASTRIDE(u32) @ 0x70188 => Display(DisplayReg::PlaneStride);
    /// Primary plane A surface GGTT address (`DSPSURF`): a write flips.
    DSPASURF(u32) @ 0x7019C => Display(DisplayReg::PlaneSurf);
    /// Fence registers (`FENCE_REG_GEN6_LO/HI(i)`): 16 × 64 bits.
    FENCE(u64) @ 0x100000 [16; 8] => Fence;
    /// Forcewake ack (`FORCEWAKE_ACK_HSW`): mirrors the request (paper §3.6).
    FORCEWAKE_ACK(u32) @ 0x130044 => ForcewakeAck;
    /// GT thread status (`GEN6_GT_THREAD_STATUS_REG`): 0 = all threads awake,
    /// what a native driver polls for after a forcewake.
    GT_THREAD_STATUS(u32) @ 0x13805C => ReadOnly(0);
}

/// Ring register offsets relative to an engine's MMIO base (Intel
/// `RING_*(base)`, gvt-sim.md): the one list that gvt-sim's command streamer
/// ([`super::engine`]), the context images ([`super::ctx`]) and the vGPU
/// register table above ([`RingOffsets`]) share.
pub mod ring {
    pub const TAIL: u32 = 0x30;
    pub const HEAD: u32 = 0x34;
    pub const START: u32 = 0x38;
    pub const CTL: u32 = 0x3C;
    /// Header of the command that faulted.
    pub const IPEHR: u32 = 0x68;
    /// Address being executed.
    pub const ACTHD: u32 = 0x74;
    pub const HWS_PGA: u32 = 0x80;
    pub const HWSTAM: u32 = 0x98;
    /// Masked: bit 8 stop ring, bit 9 (read-only) ring idle.
    pub const MI_MODE: u32 = 0x9C;
    /// Per-ring interrupt mask (`RING_IMR`).
    pub const IMR: u32 = 0xA8;
    /// Error identity: bit 0 instruction error, bit 4 page-table error.
    pub const EIR: u32 = 0xB0;
    pub const BBADDR: u32 = 0x140;
    pub const PP_DIR_DCLV: u32 = 0x220;
    pub const PP_DIR_BASE: u32 = 0x228;
    /// Ring mode, masked (`RING_MODE_GEN7`).
    pub const GFX_MODE: u32 = 0x29C;
    /// Commands retired (low dword).
    pub const TIMESTAMP: u32 = 0x358;
    /// Size of an engine's register block.
    pub const BLOCK: u32 = 0x800;
}

/// Number of fence registers.
pub const FENCE_COUNT: u32 = 16;

/// BAR0 offset of fence `n`'s low dword.
pub const fn fence_offset(n: u32) -> u32 {
    FENCE + n * 8
}

/// The ring registers of `engine` (offsets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingOffsets {
    pub tail: u32,
    pub head: u32,
    pub start: u32,
    pub ctl: u32,
    pub hws_pga: u32,
    pub pp_dir_base: u32,
}

impl RingOffsets {
    pub const fn of(engine: EngineId) -> Self {
        let b = engine.mmio_base();
        RingOffsets {
            tail: b + ring::TAIL,
            head: b + ring::HEAD,
            start: b + ring::START,
            ctl: b + ring::CTL,
            hws_pga: b + ring::HWS_PGA,
            pp_dir_base: b + ring::PP_DIR_BASE,
        }
    }
}

/// Declares a bit-field view of a register value: a `Copy` newtype with a
/// getter `field()` and a builder `with_field(v)` per field (`hi:lo name;`).
macro_rules! bitfield {
    (
        $(#[doc = $doc:literal])*
        pub struct $name:ident(u32) {
            $( $(#[doc = $fdoc:literal])* $hi:literal : $lo:literal $field:ident, $with:ident; )*
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name(pub u32);
        impl $name {
            $(
                $(#[doc = $fdoc])*
                pub const fn $field(self) -> u32 {
                    (self.0 >> $lo) & (((1u64 << ($hi - $lo + 1)) - 1) as u32)
                }
                /// Returns the value with the field replaced (excess bits dropped).
                pub const fn $with(self, v: u32) -> Self {
                    let m = (((1u64 << ($hi - $lo + 1)) - 1) as u32) << $lo;
                    $name((self.0 & !m) | ((v << $lo) & m))
                }
            )*
        }
    };
}

bitfield! {
    /// RING_CTL value (Intel encoding).
    pub struct RingCtl(u32) {
        /// Ring enabled.
        0:0 enable, with_enable;
        /// Ring length field (Intel `RING_NR_PAGES`): the ring is
        /// `length + 1` pages long, see [`RingCtl::size_bytes`].
        20:12 length, with_length;
    }
}

impl RingCtl {
    /// Ring buffer size in bytes: Intel's `(RING_NR_PAGES field + 1) * 4 KiB`.
    pub const fn size_bytes(self) -> u32 {
        (self.length() + 1) * 4096
    }
}

bitfield! {
    /// GDRST value (Intel `GEN6_GRDOM_*`).
    pub struct Gdrst(u32) {
        /// Full GPU reset.
        0:0 full, with_full;
        /// Render engine reset.
        1:1 render, with_render;
        /// Blitter engine reset.
        3:3 blitter, with_blitter;
    }
}

impl Gdrst {
    /// Full GPU reset bit (`GEN6_GRDOM_FULL`).
    pub const FULL: u32 = 1 << 0;
    /// Render engine reset bit (`GEN6_GRDOM_RENDER`).
    pub const RENDER: u32 = 1 << 1;
    /// Blitter engine reset bit (`GEN6_GRDOM_BLT`).
    pub const BLITTER: u32 = 1 << 3;
    /// The reset bit of one engine.
    pub const fn engine_bit(e: EngineId) -> u32 {
        match e {
            EngineId::Rcs => Self::RENDER,
            EngineId::Bcs => Self::BLITTER,
        }
    }
    /// Whether this value resets engine `e` (its own bit or a full reset).
    pub const fn resets(self, e: EngineId) -> bool {
        self.0 & (Self::FULL | Self::engine_bit(e)) != 0
    }
}

// The table's literal ring offsets agree with the shared relative ones.
const _: () = {
    let r = RingOffsets::of(EngineId::Rcs);
    let b = RingOffsets::of(EngineId::Bcs);
    assert!(r.tail == RCS_RING_TAIL && r.head == RCS_RING_HEAD && r.start == RCS_RING_START && r.ctl == RCS_RING_CTL);
    assert!(r.hws_pga == RCS_HWS_PGA && r.pp_dir_base == RCS_PP_DIR_BASE);
    assert!(RCS_HWSTAM == 0x2000 + ring::HWSTAM && RCS_PP_DIR_DCLV == 0x2000 + ring::PP_DIR_DCLV);
    assert!(b.tail == BCS_RING_TAIL && b.head == BCS_RING_HEAD && b.start == BCS_RING_START && b.ctl == BCS_RING_CTL);
    assert!(b.hws_pga == BCS_HWS_PGA && b.pp_dir_base == BCS_PP_DIR_BASE);
    assert!(Gdrst(Gdrst::FULL).full() == 1 && Gdrst(Gdrst::RENDER).render() == 1 && Gdrst(Gdrst::BLITTER).blitter() == 1);
};

bitfield! {
    /// DSPACNTR value.
    pub struct PlaneCtl(u32) {
        /// Plane enabled.
        31:31 enable, with_enable;
        /// Pixel format (Intel `DISPPLANE_PIXFORMAT_MASK`), see [`PlaneCtl::FORMAT_XRGB8888`].
        29:26 format, with_format;
    }
}

impl PlaneCtl {
    /// Intel `DISPPLANE_BGRX888` (XRGB8888 in DRM terms).
    pub const FORMAT_XRGB8888: u32 = 0x6;
}

bitfield! {
    /// PIPEASRC value: sizes minus one.
    pub struct PipeSrc(u32) {
        /// Width minus one.
        28:16 width_minus_1, with_width_minus_1;
        /// Height minus one.
        11:0 height_minus_1, with_height_minus_1;
    }
}

/// Intel's masked-register write (`CALC_MODE_MASK_REG` in GVT-g): bits 31:16
/// of `written` select which of bits 15:0 take `written`'s value; the stored
/// upper half is the last written mask.
pub const fn masked_write(old: u32, written: u32) -> u32 {
    let sel = written >> 16;
    (written & 0xFFFF_0000) | ((old & 0xFFFF) & !sel) | (written & sel)
}

/// Whether a register table is sorted, disjoint, dword-aligned, inside
/// [`REG_RANGE`] and clear of the PVINFO window.
pub const fn table_is_valid(t: &[RegDesc]) -> bool {
    let pv_lo = super::pvinfo::PVINFO_BASE;
    let pv_hi = pv_lo + super::pvinfo::PVINFO_SIZE;
    let mut i = 0;
    while i < t.len() {
        let r = &t[i];
        if r.offset % 4 != 0 || r.count == 0 || r.end() > REG_RANGE {
            return false;
        }
        if r.count > 1 && (r.stride % 4 != 0 || r.stride < r.width.dwords() * 4) {
            return false;
        }
        if r.offset < pv_hi && pv_lo < r.end() {
            return false;
        }
        if i > 0 && t[i - 1].end() > r.offset {
            return false;
        }
        i += 1;
    }
    true
}

// A misplaced, overlapping or unsorted line does not build.
const _: () = assert!(table_is_valid(REGISTERS));

/// The table entry covering the dword at BAR0 offset `offset` (any byte
/// offset; the dword containing it is looked up), if any.  O(log n).
pub fn lookup(offset: u32) -> Option<RegHit> {
    let offset = offset & !3;
    let idx = REGISTERS.partition_point(|r| r.offset <= offset);
    let desc = REGISTERS.get(idx.checked_sub(1)?)?;
    let rel = offset.checked_sub(desc.offset)?;
    if rel >= desc.span() {
        return None;
    }
    let (index, within) = if desc.count > 1 && desc.stride > 0 {
        (rel / desc.stride, rel % desc.stride)
    } else {
        (0, rel)
    };
    if within >= desc.width.dwords() * 4 {
        return None; // a gap between array elements
    }
    Some(RegHit { desc, index, dword: within / 4 })
}

/// The table entry named `name` (for tools and tests; linear).
pub fn by_name(name: &str) -> Option<&'static RegDesc> {
    REGISTERS.iter().find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sorted_and_disjoint() {
        assert!(table_is_valid(REGISTERS));
        for w in REGISTERS.windows(2) {
            assert!(w[0].end() <= w[1].offset, "{} / {}", w[0].name, w[1].name);
        }
    }

    #[test]
    fn validity_check_rejects_bad_tables() {
        let a = RegDesc {
            name: "A",
            offset: 0x100,
            count: 1,
            stride: 0,
            width: Width::U32,
            kind: RegKind::Scratch,
            doc: "",
        };
        let b = RegDesc { name: "B", offset: 0x104, ..a };
        assert!(table_is_valid(&[a, b]));
        assert!(!table_is_valid(&[b, a]), "unsorted");
        assert!(!table_is_valid(&[a, RegDesc { offset: 0x100, ..b }]), "overlap");
        assert!(!table_is_valid(&[RegDesc { offset: 0x102, ..a }]), "misaligned");
        assert!(!table_is_valid(&[RegDesc { offset: REG_RANGE - 4, width: Width::U64, ..a }]), "past the range");
        assert!(!table_is_valid(&[RegDesc { offset: 0x78010, ..a }]), "inside PVINFO");
        assert!(!table_is_valid(&[RegDesc { count: 4, stride: 4, width: Width::U64, ..a }]), "stride < width");
    }

    #[test]
    fn every_declared_offset_is_found() {
        for r in REGISTERS {
            for i in 0..r.count {
                for d in 0..r.width.dwords() {
                    let off = r.offset + i * r.stride + d * 4;
                    let hit = lookup(off).unwrap_or_else(|| panic!("{} {i} {d}", r.name));
                    assert_eq!(hit.desc.name, r.name);
                    assert_eq!((hit.index, hit.dword), (i, d));
                    assert_eq!(hit.element_offset(), r.offset + i * r.stride);
                    // sub-dword offsets find the same dword
                    assert_eq!(lookup(off + 3).map(|h| (h.desc.name, h.index, h.dword)), Some((r.name, i, d)));
                }
            }
        }
    }

    #[test]
    fn lookup_agrees_with_linear_scan() {
        // every dword around every entry, and a sweep of the whole range
        let linear = |off: u32| {
            REGISTERS.iter().find(|r| {
                (0..r.count).any(|i| {
                    let s = r.offset + i * r.stride;
                    off >= s && off < s + r.width.dwords() * 4
                })
            })
        };
        let mut off = 0;
        while off < REG_RANGE {
            assert_eq!(lookup(off).map(|h| h.desc.name), linear(off).map(|r| r.name), "{off:#x}");
            off += 4;
        }
        assert!(lookup(REG_RANGE).is_none());
        assert!(lookup(u32::MAX).is_none());
        assert!(lookup(0).is_none());
    }

    #[test]
    fn names_and_offsets_match_the_design() {
        assert_eq!(RCS_RING_TAIL, 0x2030);
        assert_eq!(BCS_RING_TAIL, 0x22030);
        assert_eq!(RingOffsets::of(EngineId::Rcs).tail, RCS_RING_TAIL);
        assert_eq!(RingOffsets::of(EngineId::Bcs).pp_dir_base, BCS_PP_DIR_BASE);
        assert_eq!(RingOffsets::of(EngineId::Bcs).hws_pga, BCS_HWS_PGA);
        assert_eq!(fence_offset(15), 0x100078);
        assert_eq!(lookup(0x10007C).map(|h| (h.index, h.dword)), Some((15, 1)));
        assert!(lookup(0x100080).is_none());
        assert_eq!(by_name("GDRST").map(|r| r.offset), Some(0x941C));
        assert!(by_name("GDRST").is_some_and(|r| r.doc.contains("reset")));
        assert_eq!(lookup(FORCEWAKE_ACK).map(|h| h.kind()), Some(RegKind::ForcewakeAck));
        assert_eq!(lookup(DSPASURF).map(|h| h.kind()), Some(RegKind::Display(DisplayReg::PlaneSurf)));
    }

    #[test]
    fn bitfields() {
        let c = RingCtl(0).with_enable(1).with_length(31);
        assert_eq!(c.0, 1 | (31 << 12));
        assert_eq!(c.size_bytes(), 32 * 4096);
        assert_eq!(RingCtl(0xFFFF_FFFF).length(), 0x1FF);
        assert_eq!(RingCtl(0).with_length(0x200).length(), 0, "excess bits dropped");
        let p = PipeSrc(0).with_width_minus_1(1023).with_height_minus_1(767);
        assert_eq!(p.0, (1023 << 16) | 767);
        assert_eq!(PlaneCtl(0).with_enable(1).with_format(PlaneCtl::FORMAT_XRGB8888).0, 0x9800_0000);
        assert_eq!(Gdrst(0b1010).blitter(), 1);
        assert_eq!(Gdrst(0b1010).full(), 0);
    }

    #[test]
    fn masked_register_semantics() {
        // enable bit 0
        let v = masked_write(0, 0x0001_0001);
        assert_eq!(v & 0xFFFF, 1);
        // a write without mask bits changes nothing in the low half
        assert_eq!(masked_write(v, 0x0000_FFFF) & 0xFFFF, 1);
        // clear bit 0, keep bit 1
        let v = masked_write(0x3, 0x0001_0000);
        assert_eq!(v & 0xFFFF, 2);
    }
}
