//! The vGPU register map (paper §3.3 "MMIO ... trap-and-emulate", §3.6 PM
//! registers), declared once.
//!
//! Every register is one row of the `register!` table below: its name
//! (which also becomes a `pub const` with the register's offset), its width,
//! its offset (and for register arrays the element count and stride), its
//! documentation, the bit fields of its value (a type with one getter and
//! one builder per field, `bool` for one-bit fields) and, for a register the
//! mediator treats specially, its [`RegKind`] — the policy [`super::mmio`]
//! applies to a guest access.  The ring registers are engine-relative rows
//! (nova-core's `@ Base + offset`, GVT-g's `MMIO_RING_DFH`): declared once
//! as an offset from an engine's MMIO base ([`ring`], [`EngineId::reg`]) and
//! instantiated for every engine.  Everything else inside the 2 MiB register
//! range is a plain virtual register (GVT-g behaviour: unknown registers are
//! kept in the vreg file and never reach hardware); the MMIO dispatcher
//! counts such accesses.  The vreg file is sparse ([`VREG_DWORDS`]): the
//! pages of the table's registers always have a place, other pages take one
//! of [`SPARE_PAGES`] spare pages when first written.
//!
//! Lookup ([`lookup`]) takes constant time: the compiler builds, from the
//! table, the row of every dword of the pages that hold registers
//! (`REG_AT`, one byte a dword of each fixed page), so an access costs the
//! page's slot and one load.  The table is sorted by the compiler, and its
//! disjointness, alignment and bounds are checked at compile time (a `const`
//! assertion), so a badly placed row does not build.
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
/// Bytes of one page of the register range.
pub const VREG_PAGE_SIZE: u32 = 0x1000;
/// Dwords of one page of the vreg file.
pub const VREG_PAGE_DWORDS: usize = (VREG_PAGE_SIZE / 4) as usize;
/// Pages of the register range (512).
pub const REG_PAGES: usize = (REG_RANGE / VREG_PAGE_SIZE) as usize;
/// Pages of spare room for plain registers outside the fixed pages.
pub const SPARE_PAGES: usize = 16;
/// Pages of the register range the vreg file always holds
/// ([`FIXED_SLOT`]).
pub const FIXED_PAGES: usize = count_fixed(&FIXED_SLOT);
/// Pages the vreg file holds: the fixed ones and the spares.
pub const VREG_PAGES: usize = FIXED_PAGES + SPARE_PAGES;
/// Dwords of virtual register state per vGPU, a sparse file (GVT-g's
/// `vreg` is the whole 2 MiB range): a directory of [`REG_PAGES`] dwords
/// (which spare page holds each page of the range, 1-based; 0 for none),
/// then [`VREG_PAGES`] pages — first the fixed pages (every page holding a
/// register of the table, the PVINFO page and the guest EDID page), then the
/// spares, taken by the first non-zero write to a page of plain registers
/// outside the fixed ones and given back only when the file is reset.  A
/// page that has none reads as zero; a non-zero write to a page when every
/// spare is taken is dropped ([`vreg_mut`] says `None`), so a guest cannot
/// make a vGPU hold more than this.  About 114 KiB instead of 2 MiB.
pub const VREG_DWORDS: usize = REG_PAGES + VREG_PAGES * VREG_PAGE_DWORDS;

/// The guest EDID page (`edid::guest::BASE`), a fixed page of the vreg file.
pub const GUEST_EDID_PAGE: u32 = 0x79000;

/// Per page of the register range, its fixed page of the vreg file plus
/// one (0: none).
pub const FIXED_SLOT: [u8; REG_PAGES] = fixed_slots();

const fn fixed_slots() -> [u8; REG_PAGES] {
    let mut mark = [false; REG_PAGES];
    let mut i = 0;
    while i < REGISTERS.len() {
        let r = &REGISTERS[i];
        let mut p = r.offset / VREG_PAGE_SIZE;
        while p <= (r.end() - 1) / VREG_PAGE_SIZE {
            mark[p as usize] = true;
            p += 1;
        }
        i += 1;
    }
    mark[(super::pvinfo::PVINFO_BASE / VREG_PAGE_SIZE) as usize] = true;
    mark[(GUEST_EDID_PAGE / VREG_PAGE_SIZE) as usize] = true;
    let mut slots = [0u8; REG_PAGES];
    let mut n = 0u8;
    let mut p = 0;
    while p < REG_PAGES {
        if mark[p] {
            n += 1;
            slots[p] = n;
        }
        p += 1;
    }
    slots
}

const fn count_fixed(slots: &[u8; REG_PAGES]) -> usize {
    let mut n = 0;
    let mut p = 0;
    while p < REG_PAGES {
        if slots[p] != 0 {
            n += 1;
        }
        p += 1;
    }
    n
}

// The directory's entries and the fixed slots fit their types.
const _: () = assert!(VREG_PAGES < 255 && SPARE_PAGES > 0);

/// Where the dword at BAR0 offset `offset` (any byte of it) lives in the
/// vreg file if its page is a fixed one: a constant place, whatever the
/// file holds.
#[inline(always)]
pub const fn fixed_vreg_index(offset: u32) -> Option<usize> {
    if offset >= REG_RANGE {
        return None;
    }
    let s = FIXED_SLOT[(offset / VREG_PAGE_SIZE) as usize] as usize;
    if s == 0 {
        return None;
    }
    Some(REG_PAGES + (s - 1) * VREG_PAGE_DWORDS + ((offset % VREG_PAGE_SIZE) / 4) as usize)
}

/// [`fixed_vreg_index`] of a constant offset that must be fixed (a
/// non-fixed one does not build).
pub const fn fixed_index(offset: u32) -> usize {
    match fixed_vreg_index(offset) {
        Some(i) => i,
        None => panic!("not on a fixed vreg page"),
    }
}

/// Where the dword at `offset` lives in `vregs`, if its page has a place.
/// On every register access: inlined, so it costs no call.
#[inline(always)]
pub fn vreg_index(vregs: &[u32], offset: u32) -> Option<usize> {
    if let Some(i) = fixed_vreg_index(offset) {
        return Some(i);
    }
    let d = *vregs.get((offset / VREG_PAGE_SIZE) as usize)? as usize;
    if d == 0 || d > SPARE_PAGES {
        return None;
    }
    Some(
        REG_PAGES
            + (FIXED_PAGES + d - 1) * VREG_PAGE_DWORDS
            + ((offset % VREG_PAGE_SIZE) / 4) as usize,
    )
}

/// The vreg at `offset` (its dword); 0 if its page has no place.
#[inline]
pub fn vreg_get(vregs: &[u32], offset: u32) -> u32 {
    vreg_index(vregs, offset)
        .and_then(|i| vregs.get(i))
        .copied()
        .unwrap_or(0)
}

/// The vreg at `offset`, to write: a page of plain registers without a
/// place takes a spare page; `None` when none is left (or `offset` is
/// outside the register range, or `vregs` is shorter than
/// [`VREG_DWORDS`]).
#[inline]
pub fn vreg_mut(vregs: &mut [u32], offset: u32) -> Option<&mut u32> {
    if vregs.len() < VREG_DWORDS || offset >= REG_RANGE {
        return None;
    }
    match vreg_index(vregs, offset) {
        Some(i) => vregs.get_mut(i),
        None => vreg_mut_spare(vregs, offset),
    }
}

/// [`vreg_mut`] of a page that has no place yet: it takes a spare page.
#[cold]
#[inline(never)]
fn vreg_mut_spare(vregs: &mut [u32], offset: u32) -> Option<&mut u32> {
    let mut used = [false; SPARE_PAGES];
    for &d in vregs.get(..REG_PAGES)? {
        if let Some(u) = (d as usize).checked_sub(1).and_then(|k| used.get_mut(k)) {
            *u = true;
        }
    }
    let free = used.iter().position(|u| !u)?;
    // A spare page is zero: the file is zeroed on reset, the only
    // time a spare is given back.
    *vregs.get_mut((offset / VREG_PAGE_SIZE) as usize)? = free as u32 + 1;
    let i = vreg_index(vregs, offset)?;
    vregs.get_mut(i)
}

/// Spare pages in use.
pub fn spare_pages_used(vregs: &[u32]) -> usize {
    vregs
        .get(..REG_PAGES)
        .unwrap_or(&[])
        .iter()
        .filter(|&&d| d != 0)
        .count()
}

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
    /// The register's name (as declared, Intel-like; an engine-relative
    /// row's name is `RING_` and its row's name).
    pub name: &'static str,
    /// The engine of an engine-relative row's instance.
    pub engine: Option<EngineId>,
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
    /// A placeholder row (the table is built in place at compile time).
    const EMPTY: RegDesc = RegDesc {
        name: "",
        engine: None,
        offset: 0,
        count: 1,
        stride: 0,
        width: Width::U32,
        kind: RegKind::Scratch,
        doc: "",
    };
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
    #[inline]
    pub fn kind(&self) -> RegKind {
        self.desc.kind
    }
    /// BAR0 offset of the element's first dword.
    #[inline]
    pub fn element_offset(&self) -> u32 {
        self.desc
            .offset
            .wrapping_add(self.index.wrapping_mul(self.desc.stride))
    }
}

/// Declares the register map, each register once: for every row a
/// `pub const NAME: u32` with its offset (and the row's doc), its entry (or,
/// for an engine-relative row, one entry per engine) in [`REGISTERS`] when
/// the row names a [`RegKind`], and the bit-field type of its value when the
/// row lists fields.
///
/// ```text
/// engine(e) in MODULE {
///     /// doc
///     NAME(u32) @ +REL [as Type { fields }]? [=> KIND(e)]?;
/// }
/// /// doc
/// NAME(u32|u64) @ OFFSET [COUNT; STRIDE]? [as Type { fields }]? => KIND;
/// ```
/// Engine-relative rows (nova-core's `@ Base + offset`, GVT-g's
/// `MMIO_RING_DFH`) declare `MODULE::NAME` as the offset from an engine's
/// MMIO base ([`EngineId::reg`] places it) and are instantiated for every
/// engine of [`EngineId::ALL`]; their `KIND` may use the row's engine `e`.
/// A row without `KIND` is declared but not mediated (a plain vreg for the
/// guest).  `KIND` is a [`RegKind`] expression with the variants in scope.
/// A field is `HI:LO getter, setter: bool|u32;`; a one-bit field is `bool`.
macro_rules! register {
    (@width u32) => { Width::U32 };
    (@width u64) => { Width::U64 };
    (@or $default:literal) => { $default };
    (@or $default:literal, $v:literal) => { $v };
    (@one $($x:tt)*) => { 1 };
    (@get bool, $v:expr) => { $v != 0 };
    (@get u32, $v:expr) => { $v };
    (@set bool, $v:expr) => { $v as u32 };
    (@set u32, $v:expr) => { $v };
    (@mask $hi:literal, $lo:literal) => { ((((1u64 << ($hi - $lo + 1)) - 1) as u32) << $lo) };
    (@ring_entry $t:ident, $n:ident, $e:ident, $rel:path, $rname:ident, [$($rdoc:literal),+]) => {};
    (@ring_entry $t:ident, $n:ident, $e:ident, $rel:path, $rname:ident, [$($rdoc:literal),+], $rkind:expr) => {
        $t[$n] = RegDesc {
            name: concat!("RING_", stringify!($rname)),
            engine: Some($e),
            offset: $e.reg($rel),
            count: 1,
            stride: 0,
            width: Width::U32,
            kind: {
                #[allow(unused_imports)]
                use RegKind::*;
                $rkind
            },
            doc: concat!($($rdoc, "\n"),+),
        };
        $n += 1;
    };
    (@value $prefix:literal $reg:ident, $ty:ident {
        $( $(#[doc = $fdoc:literal])* $hi:literal : $lo:literal $get:ident, $set:ident : $fty:ident; )*
    }) => {
        #[doc = concat!("A value of `", $prefix, stringify!($reg), "`, with its bit fields.")]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $ty(pub u32);
        impl $ty {
            $(
                $(#[doc = $fdoc])*
                pub const fn $get(self) -> $fty {
                    register!(@get $fty, (self.0 & register!(@mask $hi, $lo)) >> $lo)
                }
                /// Returns the value with the field replaced (excess bits dropped).
                pub const fn $set(self, v: $fty) -> Self {
                    let m = register!(@mask $hi, $lo);
                    $ty((self.0 & !m) | ((register!(@set $fty, v) << $lo) & m))
                }
            )*
        }
    };
    (
        engine($e:ident) in $module:ident {
            $(
                $(#[doc = $rdoc:literal])+
                $rname:ident(u32) @ + $roff:literal
                    $(as $rty:ident { $($rfield:tt)* })? $(=> $rkind:expr)?;
            )*
        }
        $(
            $(#[doc = $doc:literal])+
            $name:ident($w:ident) @ $off:literal $([$count:literal; $stride:literal])?
                $(as $ty:ident { $($field:tt)* })? => $kind:expr;
        )*
    ) => {
        /// Engine-relative register offsets (Intel `RING_*(base)`): the one
        /// list that gvt-sim's command streamer ([`super::engine`]), the
        /// context images ([`super::ctx`]) and the vGPU register table share;
        /// [`EngineId::reg`] places one at an engine's MMIO base.
        pub mod $module {
            $(
                $(#[doc = $rdoc])+
                pub const $rname: u32 = $roff;
            )*
        }
        $($(register!(@value "RING_" $rname, $rty { $($rfield)* });)?)*
        $(
            $(#[doc = $doc])+
            pub const $name: u32 = $off;
            $(register!(@value "" $name, $ty { $($field)* });)?
        )*
        const TABLE_LEN: usize =
            EngineId::COUNT * (0 $($(+ register!(@one $rkind))?)*) + (0 $(+ register!(@one $name))*);
        /// The register table in declaration order, every engine-relative row
        /// instantiated for every engine.
        const fn declared() -> [RegDesc; TABLE_LEN] {
            let mut t = [RegDesc::EMPTY; TABLE_LEN];
            let mut n = 0;
            let mut k = 0;
            while k < EngineId::COUNT {
                let $e = EngineId::ALL[k];
                $(
                    register!(@ring_entry t, n, $e, $module::$rname, $rname, [$($rdoc),+] $(, $rkind)?);
                )*
                k += 1;
            }
            $(
                t[n] = RegDesc {
                    name: stringify!($name),
                    engine: None,
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
                };
                n += 1;
            )*
            assert!(n == TABLE_LEN);
            t
        }
        /// The register table, sorted by offset at compile time.
        pub const REGISTERS: &[RegDesc] = &sorted(declared());
    };
}

register! {
    engine(e) in ring {
        /// Ring tail (`RING_TAIL(base)`): a write submits [HEAD, TAIL).
        TAIL(u32) @ +0x30 => RingTail(e);
        /// Ring head (`RING_HEAD`): where the engine is in the ring.
        HEAD(u32) @ +0x34 => RingHead(e);
        /// Ring start (`RING_START`): GGTT address of the ring buffer.
        START(u32) @ +0x38 => RingStart(e);
        /// Ring control (`RING_CTL`): enable, length.
        CTL(u32) @ +0x3C as RingCtl {
            /// Ring enabled.
            0:0 enable, with_enable: bool;
            /// Ring length field (Intel `RING_NR_PAGES`): the ring is
            /// `length + 1` pages long, see [`RingCtl::size_bytes`].
            20:12 length, with_length: u32;
        } => RingCtl(e);
        /// Header of the command that faulted (`RING_IPEHR`).
        IPEHR(u32) @ +0x68;
        /// Address being executed (`RING_ACTHD`).
        ACTHD(u32) @ +0x74;
        /// Hardware status page address (`RING_HWS_PGA`).
        HWS_PGA(u32) @ +0x80 => HwsPga(e);
        /// Hardware status mask (`RING_HWSTAM`): plain virtual register.
        HWSTAM(u32) @ +0x98 => Scratch;
        /// `MI_MODE`, masked: bit 8 stop ring, bit 9 (read-only) ring idle.
        MI_MODE(u32) @ +0x9C;
        /// Per-ring interrupt mask (`RING_IMR`).
        IMR(u32) @ +0xA8;
        /// Error identity (`RING_EIR`): bit 0 instruction error, bit 4
        /// page-table error.
        EIR(u32) @ +0xB0;
        /// Batch buffer address (`RING_BBADDR`).
        BBADDR(u32) @ +0x140;
        /// PPGTT directory cacheline valid (`RING_PP_DIR_DCLV`): virtual.
        PP_DIR_DCLV(u32) @ +0x220 => Scratch;
        /// PPGTT page-directory base (`RING_PP_DIR_BASE`): the PPGTT root.
        /// gvt-sim's blitter uses the GGTT only; its register is still
        /// mediated so a guest cannot slip a root past us.
        PP_DIR_BASE(u32) @ +0x228 => PpDirBase(e);
        /// Ring mode, masked (`RING_MODE_GEN7`).
        GFX_MODE(u32) @ +0x29C;
        /// Commands retired, low dword (`RING_TIMESTAMP`).
        TIMESTAMP(u32) @ +0x358;
    }
    /// Graphics device reset (`GEN6_GDRST`), bits as [`Gdrst`].
    GDRST(u32) @ 0x941C as Gdrst {
        /// Full GPU reset (`GEN6_GRDOM_FULL`).
        0:0 full, with_full: bool;
        /// Render engine reset (`GEN6_GRDOM_RENDER`).
        1:1 render, with_render: bool;
        /// Blitter engine reset (`GEN6_GRDOM_BLT`).
        3:3 blitter, with_blitter: bool;
    } => Gdrst;
    /// Forcewake request (`FORCEWAKE_MT`, masked: bits 31:16 select bits 15:0).
    FORCEWAKE_REQ(u32) @ 0xA188 => ForcewakeReq;
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
    PIPEASRC(u32) @ 0x6001C as PipeSrc {
        /// Width minus one.
        28:16 width_minus_1, with_width_minus_1: u32;
        /// Height minus one.
        11:0 height_minus_1, with_height_minus_1: u32;
    } => Display(DisplayReg::PipeSrc);
    /// Cursor A control (`CURCNTR(PIPE_A)`, i9xx): bits 5:0 the mode
    /// ([`super::display::CursorMode`]; 0 disabled).
    CURACNTR(u32) @ 0x70080 => Display(DisplayReg::CursorCtl);
    /// Cursor A image GGTT address (`CURBASE`), 4 KiB aligned.
    CURABASE(u32) @ 0x70084 => Display(DisplayReg::CursorBase);
    /// Cursor A position (`CURPOS`): x in bits 14:0 with sign bit 15, y in
    /// bits 30:16 with sign bit 31.
    CURAPOS(u32) @ 0x70088 => Display(DisplayReg::CursorPos);
    /// Primary plane A control (`DSPCNTR(PLANE_A)`), bits as [`PlaneCtl`].
    DSPACNTR(u32) @ 0x70180 as PlaneCtl {
        /// Plane enabled.
        31:31 enable, with_enable: bool;
        /// Pixel format (Intel `DISPPLANE_PIXFORMAT_MASK`), see
        /// [`PlaneCtl::FORMAT_XRGB8888`].
        29:26 format, with_format: u32;
    } => Display(DisplayReg::PlaneCtl);
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

impl EngineId {
    /// BAR0 offset of the engine-relative register `rel` ([`ring`]) of this
    /// engine.
    pub const fn reg(self, rel: u32) -> u32 {
        self.mmio_base() + rel
    }
}

/// Size of an engine's register block.
pub const RING_BLOCK: u32 = 0x800;

/// Number of fence registers.
pub const FENCE_COUNT: u32 = 16;

/// BAR0 offset of fence `n`'s low dword.
pub const fn fence_offset(n: u32) -> u32 {
    FENCE + n * 8
}

impl RingCtl {
    /// Ring buffer size in bytes: Intel's `(RING_NR_PAGES field + 1) * 4 KiB`.
    pub const fn size_bytes(self) -> u32 {
        (self.length() + 1) * 4096
    }
}

impl Gdrst {
    /// Full GPU reset bit (`GEN6_GRDOM_FULL`).
    pub const FULL: u32 = Gdrst(0).with_full(true).0;
    /// Render engine reset bit (`GEN6_GRDOM_RENDER`).
    pub const RENDER: u32 = Gdrst(0).with_render(true).0;
    /// Blitter engine reset bit (`GEN6_GRDOM_BLT`).
    pub const BLITTER: u32 = Gdrst(0).with_blitter(true).0;
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

impl PlaneCtl {
    /// Intel `DISPPLANE_BGRX888` (XRGB8888 in DRM terms).
    pub const FORMAT_XRGB8888: u32 = 0x6;
}

/// Intel's masked-register write (`CALC_MODE_MASK_REG` in GVT-g): bits 31:16
/// of `written` select which of bits 15:0 take `written`'s value; the stored
/// upper half is the last written mask.
pub const fn masked_write(old: u32, written: u32) -> u32 {
    let sel = written >> 16;
    (written & 0xFFFF_0000) | ((old & 0xFFFF) & !sel) | (written & sel)
}

/// `t` sorted by offset (an insertion sort run by the compiler).
const fn sorted<const N: usize>(mut t: [RegDesc; N]) -> [RegDesc; N] {
    let mut i = 1;
    while i < N {
        let mut j = i;
        while j > 0 && t[j - 1].offset > t[j].offset {
            let tmp = t[j];
            t[j] = t[j - 1];
            t[j - 1] = tmp;
            j -= 1;
        }
        i += 1;
    }
    t
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

/// Per fixed page of the vreg file ([`FIXED_SLOT`]), per dword of it: the
/// row of [`REGISTERS`] that covers it, plus one (0: none).  Built by the
/// compiler from the table, so [`lookup`] is two loads, not a search.
static REG_AT: [[u8; VREG_PAGE_DWORDS]; FIXED_PAGES] = reg_at(REGISTERS);

const fn reg_at(t: &[RegDesc]) -> [[u8; VREG_PAGE_DWORDS]; FIXED_PAGES] {
    let mut m = [[0u8; VREG_PAGE_DWORDS]; FIXED_PAGES];
    assert!(t.len() < 255, "REG_AT holds a row index in a u8");
    let mut i = 0;
    while i < t.len() {
        let r = &t[i];
        let mut e = 0;
        while e < r.count {
            let mut d = 0;
            while d < r.width.dwords() {
                let off = r.offset + e * r.stride + 4 * d;
                // Every page of a row is a fixed one (fixed_slots).
                let slot = FIXED_SLOT[(off / VREG_PAGE_SIZE) as usize] as usize;
                m[slot - 1][((off % VREG_PAGE_SIZE) / 4) as usize] = i as u8 + 1;
                d += 1;
            }
            e += 1;
        }
        i += 1;
    }
    m
}

/// The table entry covering the dword at BAR0 offset `offset` (any byte
/// offset; the dword containing it is looked up), if any: constant time
/// (the page's slot, then the dword's row in `REG_AT`).
#[inline]
pub fn lookup(offset: u32) -> Option<RegHit> {
    let offset = offset & !3;
    let slot = *FIXED_SLOT.get((offset / VREG_PAGE_SIZE) as usize)? as usize;
    let rows = REG_AT.get(slot.checked_sub(1)?)?;
    let row = *rows.get(((offset % VREG_PAGE_SIZE) / 4) as usize)? as usize;
    let desc = REGISTERS.get(row.checked_sub(1)?)?;
    let rel = offset.checked_sub(desc.offset)?;
    let (index, within) = if desc.count > 1 && desc.stride > 0 {
        (rel / desc.stride, rel % desc.stride)
    } else {
        (0, rel)
    };
    Some(RegHit {
        desc,
        index,
        dword: within / 4,
    })
}

/// Whether a row of [`REGISTERS`] covers the dword at `offset`
/// (`lookup(offset).is_some()`, without building the hit): the trap path's
/// first question, two loads and no call.
#[inline(always)]
pub fn is_named(offset: u32) -> bool {
    let Some(&slot) = FIXED_SLOT.get((offset / VREG_PAGE_SIZE) as usize) else {
        return false;
    };
    let Some(rows) = (slot as usize).checked_sub(1).and_then(|s| REG_AT.get(s)) else {
        return false;
    };
    rows.get(((offset % VREG_PAGE_SIZE) / 4) as usize)
        .is_some_and(|&row| row != 0)
}

/// [`lookup`] as it was, a binary search of the table: the oracle of the
/// test that compares the two on every dword of the register range.
#[cfg(test)]
fn lookup_search(offset: u32) -> Option<RegHit> {
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
    Some(RegHit {
        desc,
        index,
        dword: within / 4,
    })
}

/// The table entry named `name` (for tools and tests; linear).
pub fn by_name(name: &str) -> Option<&'static RegDesc> {
    REGISTERS.iter().find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// The lookup table answers exactly what the binary search of the
    /// table did, on every dword of the register range and beyond it.
    #[test]
    fn table_lookup_matches_the_search() {
        let beyond = [REG_RANGE, REG_RANGE + 4, 0x80_0000, u32::MAX - 3];
        for off in (0..REG_RANGE).step_by(4).chain(beyond) {
            for b in 0..4 {
                assert_eq!(lookup(off + b), lookup_search(off + b), "{:#x}", off + b);
                assert_eq!(
                    is_named(off + b),
                    lookup(off + b).is_some(),
                    "{:#x}",
                    off + b
                );
            }
        }
        assert!(REGISTERS
            .iter()
            .all(|r| lookup(r.offset).map(|h| h.desc) == Some(r)));
    }

    #[test]
    fn sparse_vreg_file() {
        // Every register of the table, PVINFO and the guest EDID page have
        // a fixed place; the file is a small fraction of the 2 MiB range.
        for r in REGISTERS {
            for i in 0..r.count {
                let o = r.offset + i * r.stride;
                assert!(fixed_vreg_index(o).is_some(), "{}", r.name);
                assert!(fixed_vreg_index(o + r.width.dwords() * 4 - 4).is_some());
            }
        }
        assert!(fixed_vreg_index(super::super::pvinfo::PVINFO_BASE + 0xFFC).is_some());
        assert!(fixed_vreg_index(GUEST_EDID_PAGE).is_some());
        const {
            assert!(FIXED_PAGES < 20);
            assert!(VREG_DWORDS * 4 < 128 << 10);
            assert!(VREG_DWORDS < (REG_RANGE / 4) as usize / 16);
        }
        // Distinct offsets get distinct places.
        let mut seen = vec![false; VREG_DWORDS];
        for off in (0..REG_RANGE).step_by(4) {
            if let Some(i) = fixed_vreg_index(off) {
                assert!(i >= REG_PAGES && !seen[i], "{off:#x}");
                seen[i] = true;
            }
        }
        let mut v = vec![0u32; VREG_DWORDS];
        // A plain register on a page of its own: reads 0, takes a spare
        // page on its first write, keeps its value.
        let plain = 0x4000u32;
        assert!(fixed_vreg_index(plain).is_none());
        assert_eq!(vreg_get(&v, plain), 0);
        assert_eq!(spare_pages_used(&v), 0);
        *vreg_mut(&mut v, plain).unwrap() = 7;
        *vreg_mut(&mut v, plain + 4).unwrap() = 8;
        assert_eq!((vreg_get(&v, plain), vreg_get(&v, plain + 4)), (7, 8));
        assert_eq!(spare_pages_used(&v), 1);
        // Spares run out: the next new page gets no place, reads 0; the
        // pages that have one and the fixed ones keep working.
        let untracked: Vec<u32> = (0..REG_PAGES as u32)
            .map(|p| p * VREG_PAGE_SIZE + 0x10)
            .filter(|&o| fixed_vreg_index(o).is_none())
            .collect();
        assert!(untracked.len() > SPARE_PAGES + 1);
        for (k, &o) in untracked.iter().enumerate() {
            let got = vreg_mut(&mut v, o).map(|d| *d = o);
            assert_eq!(got.is_some(), k < SPARE_PAGES, "page {k} at {o:#x}");
        }
        assert_eq!(spare_pages_used(&v), SPARE_PAGES);
        assert_eq!(vreg_get(&v, plain), 7);
        assert_eq!(
            vreg_get(&v, untracked[SPARE_PAGES - 1]),
            untracked[SPARE_PAGES - 1]
        );
        assert_eq!(vreg_get(&v, untracked[SPARE_PAGES]), 0);
        *vreg_mut(&mut v, FENCE + 8).unwrap() = 5;
        assert_eq!(vreg_get(&v, FENCE + 8), 5);
        // Out of range, or a short file: no place.
        assert!(vreg_mut(&mut v, REG_RANGE).is_none());
        assert_eq!(vreg_get(&v, REG_RANGE), 0);
        assert!(vreg_mut(&mut [0u32; 8], FENCE).is_none());
    }

    /// The page map only ever short-cuts to "no register": every dword of
    /// the range finds the row a linear scan of the table finds.
    #[test]
    fn page_map_agrees_with_a_linear_scan() {
        let mut hits = 0;
        for off in (0..REG_RANGE).step_by(4) {
            let slow = REGISTERS.iter().find(|r| {
                let rel = off.wrapping_sub(r.offset);
                off >= r.offset
                    && rel < r.span()
                    && (r.count <= 1 || r.stride == 0 || rel % r.stride < r.width.dwords() * 4)
            });
            let fast = lookup(off);
            assert_eq!(
                fast.map(|h| h.desc.offset),
                slow.map(|r| r.offset),
                "offset {off:#x}"
            );
            hits += fast.is_some() as u32;
        }
        assert!(hits > 0);
    }

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
            engine: None,
            offset: 0x100,
            count: 1,
            stride: 0,
            width: Width::U32,
            kind: RegKind::Scratch,
            doc: "",
        };
        let b = RegDesc {
            name: "B",
            offset: 0x104,
            ..a
        };
        assert!(table_is_valid(&[a, b]));
        assert!(!table_is_valid(&[b, a]), "unsorted");
        assert!(
            !table_is_valid(&[a, RegDesc { offset: 0x100, ..b }]),
            "overlap"
        );
        assert!(
            !table_is_valid(&[RegDesc { offset: 0x102, ..a }]),
            "misaligned"
        );
        assert!(
            !table_is_valid(&[RegDesc {
                offset: REG_RANGE - 4,
                width: Width::U64,
                ..a
            }]),
            "past the range"
        );
        assert!(
            !table_is_valid(&[RegDesc {
                offset: 0x78010,
                ..a
            }]),
            "inside PVINFO"
        );
        assert!(
            !table_is_valid(&[RegDesc {
                count: 4,
                stride: 4,
                width: Width::U64,
                ..a
            }]),
            "stride < width"
        );
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
                    assert_eq!(
                        lookup(off + 3).map(|h| (h.desc.name, h.index, h.dword)),
                        Some((r.name, i, d))
                    );
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
            assert_eq!(
                lookup(off).map(|h| h.desc.name),
                linear(off).map(|r| r.name),
                "{off:#x}"
            );
            off += 4;
        }
        assert!(lookup(REG_RANGE).is_none());
        assert!(lookup(u32::MAX).is_none());
        assert!(lookup(0).is_none());
    }

    #[test]
    fn names_and_offsets_match_the_design() {
        assert_eq!(EngineId::Rcs.reg(ring::TAIL), 0x2030);
        assert_eq!(EngineId::Bcs.reg(ring::TAIL), 0x22030);
        assert_eq!(EngineId::Bcs.reg(ring::PP_DIR_BASE), 0x22228);
        assert_eq!(EngineId::Bcs.reg(ring::HWS_PGA), 0x22080);
        // Every engine-relative row with a kind is in the table once per
        // engine, with its engine; rows without a kind are not.
        for e in EngineId::ALL {
            let hit = lookup(e.reg(ring::TAIL)).map(|h| (h.desc.name, h.desc.engine, h.kind()));
            assert_eq!(hit, Some(("RING_TAIL", Some(e), RegKind::RingTail(e))));
            assert_eq!(
                lookup(e.reg(ring::HWSTAM)).map(|h| (h.desc.engine, h.kind())),
                Some((Some(e), RegKind::Scratch))
            );
            assert!(lookup(e.reg(ring::EIR)).is_none());
            assert!(lookup(e.reg(ring::TIMESTAMP)).is_none());
        }
        assert_eq!(
            REGISTERS.iter().filter(|r| r.engine.is_some()).count(),
            8 * EngineId::COUNT
        );
        assert_eq!(fence_offset(15), 0x100078);
        assert_eq!(lookup(0x10007C).map(|h| (h.index, h.dword)), Some((15, 1)));
        assert!(lookup(0x100080).is_none());
        assert_eq!(by_name("GDRST").map(|r| r.offset), Some(0x941C));
        assert!(by_name("GDRST").is_some_and(|r| r.doc.contains("reset")));
        assert_eq!(
            lookup(FORCEWAKE_ACK).map(|h| h.kind()),
            Some(RegKind::ForcewakeAck)
        );
        assert_eq!(
            lookup(DSPASURF).map(|h| h.kind()),
            Some(RegKind::Display(DisplayReg::PlaneSurf))
        );
    }

    #[test]
    fn bitfields() {
        let c = RingCtl(0).with_enable(true).with_length(31);
        assert_eq!(c.0, 1 | (31 << 12));
        assert_eq!(c.size_bytes(), 32 * 4096);
        assert_eq!(RingCtl(0xFFFF_FFFF).length(), 0x1FF);
        assert_eq!(
            RingCtl(0).with_length(0x200).length(),
            0,
            "excess bits dropped"
        );
        let p = PipeSrc(0).with_width_minus_1(1023).with_height_minus_1(767);
        assert_eq!(p.0, (1023 << 16) | 767);
        assert_eq!(
            PlaneCtl(0)
                .with_enable(true)
                .with_format(PlaneCtl::FORMAT_XRGB8888)
                .0,
            0x9800_0000
        );
        assert!(PlaneCtl(0x8000_0000).enable() && !PlaneCtl(0x7fff_ffff).enable());
        assert!(Gdrst(0b1010).blitter());
        assert!(!Gdrst(0b1010).full());
        assert_eq!((Gdrst::FULL, Gdrst::RENDER, Gdrst::BLITTER), (1, 2, 8));
        assert_eq!(Gdrst(u32::MAX).with_render(false).0, !2);
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
