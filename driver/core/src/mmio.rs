//! BAR0 trap-and-emulate (paper §3.3: "MMIO ... accesses are trapped and
//! emulated"; §3.6: PM registers emulated, never reaching hardware).
//!
//! BAR0 of a vGPU is 16 MiB:
//!
//! | range | content | accesses |
//! |---|---|---|
//! | `[0, 2 MiB)` | registers ([`super::regs`]), virtual state in the vreg file | 1/2/4/8 bytes, naturally aligned |
//! | `[0x78000, 0x79000)` | the PVINFO page ([`super::pvinfo`]) | same |
//! | `[2 MiB, 8 MiB)` | nothing | rejected |
//! | `[8 MiB, 16 MiB)` | the guest's view of the GGTT, 8-byte PTEs: served by [`super::ggtt`] | 8 bytes, or an aligned 4-byte half |
//!
//! Everything else (other sizes, misaligned, beyond the BAR) is a
//! [`MmioError`], which the glue turns into `-EINVAL`.
//!
//! State is borrowed, never owned: the vreg file is a `&mut [u32]` of
//! [`VREG_DWORDS`] dwords (2 MiB, GVT-g's `vreg`).  The GGTT window has one
//! source of truth, the shadow GGTT ([`super::ggtt`], which keeps exactly
//! what the guest wrote for its own slices): [`classify`] tells the caller
//! (the facade, [`super::vgpu`]) that an access belongs there, and
//! [`VgpuMmio::read`]/[`VgpuMmio::write`] refuse it with
//! [`MmioError::GgttWindow`]; the facade counts it with
//! [`VgpuMmio::count_pte`].  A sub-dword register read extracts from the dword, a sub-dword
//! write is a read-modify-write of it; an 8-byte register access is two dword
//! accesses, low first.
//!
//! A write that another mediator must act on — ring TAIL (submission), a GGTT
//! PTE (shadowing), GDRST, PP_DIR_BASE, IIR/IMR/IER, fences, display
//! registers, PVINFO `display_ready`/`g2v_notify` — first updates the virtual
//! state, then comes back to the caller as a [`TrapEvent`] inside
//! [`MmioOutcome`]; the glue routes it.  Nothing here touches hardware.
//! [`TrapStats`] counts traps by the paper's breakdown (PM, TAIL, PTE, other).

use super::backend::EngineId;
use super::pvinfo::{PvEvent, PvInfo, PvWrite, PVINFO_BASE, PVINFO_DWORDS, PVINFO_SIZE};
use super::regs::{
    self, ring, DisplayReg, Gdrst, RegHit, RegKind, RingCtl, REG_RANGE, VREG_DWORDS,
};

/// Size of BAR0.
pub const BAR0_SIZE: u64 = 16 << 20;
/// Start of the guest GGTT view in BAR0.
pub const GGTT_VIEW_BASE: u64 = 8 << 20;
/// Size of the guest GGTT view (1 Mi entries: 4 GiB of GM).
pub const GGTT_VIEW_SIZE: u64 = 8 << 20;
/// Entries the view can address.
pub const GGTT_VIEW_ENTRIES: usize = (GGTT_VIEW_SIZE / 8) as usize;

/// Why an access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioError {
    /// Size not 1, 2, 4 or 8 (or, in the GGTT view, not 4 or 8).
    BadSize,
    /// Not naturally aligned.
    Misaligned,
    /// Beyond BAR0.
    OutOfRange,
    /// Inside BAR0 but in the unbacked hole `[2 MiB, 8 MiB)`.
    Unbacked,
    /// The vreg slice is shorter than [`VREG_DWORDS`] (a glue bug).
    BadState,
    /// A well-formed access to the GGTT window: not a register, served by
    /// [`super::ggtt::Ggtt::mmio_read`]/[`super::ggtt::Ggtt::mmio_write`].
    GgttWindow,
}

/// Which half of a PTE a 4-byte GGTT write touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PteHalf {
    Lo,
    Hi,
}

/// Which GT interrupt register was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqReg {
    Iir,
    Imr,
    Ier,
}

/// A guest write another mediator must act on.  The virtual state is
/// already updated when the caller sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapEvent {
    /// Ring TAIL written: new work in `[HEAD, tail)` (paper §3.4).
    RingTail { engine: EngineId, tail: u32 },
    /// PP_DIR_BASE written: a new PPGTT root (paper §3.3.2).
    PpDirBase { engine: EngineId, value: u32 },
    /// A guest GGTT entry written (paper §3.3.2), as [`classify`] decodes a
    /// GGTT-window access: `value` is the written bits (the whole entry, or a
    /// 4-byte `half` in the low bits).  Produced by the facade, which merges
    /// halves in the shadow GGTT.
    GgttWrite {
        index: u32,
        value: u64,
        half: Option<PteHalf>,
    },
    /// GDRST written with these bits; the register already reads 0 again.
    Reset(Gdrst),
    /// IIR, IMR or IER written.  For IIR `value` is the bits the guest
    /// wrote (write one to clear: the bits to clear, only within the written
    /// bytes); for IMR/IER the new register value.
    Irq { reg: IrqReg, value: u32 },
    /// Guest fence `index` (< the vGPU's fence count) now holds `value`; the
    /// physical fence is `fence_base + index`.
    Fence { index: u32, value: u64 },
    /// A display register written.
    Display { reg: DisplayReg, value: u32 },
    /// A PVINFO notification.
    PvInfo(PvEvent),
}

/// The result of an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioOutcome {
    /// A read's value (little-endian, `size` bytes in the low bits).
    Read(u64),
    /// The virtual state was updated; nothing else to do.
    Written,
    /// The write was ignored (read-only, reserved, outside the vGPU's
    /// resources).
    Dropped,
    /// The virtual state was updated; route the event.
    Event(TrapEvent),
    /// An 8-byte write that hit two separately mediated registers.
    Events(TrapEvent, TrapEvent),
}

impl MmioOutcome {
    /// The events to route, in order.
    pub fn events(&self) -> impl Iterator<Item = TrapEvent> {
        let (a, b) = match *self {
            MmioOutcome::Event(e) => (Some(e), None),
            MmioOutcome::Events(e, f) => (Some(e), Some(f)),
            _ => (None, None),
        };
        a.into_iter().chain(b)
    }
}

/// Trap counters (paper §4: PM, TAIL, PTE and other accesses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapStats {
    /// Power-management (forcewake) register accesses.
    pub pm: u64,
    /// Ring TAIL accesses.
    pub tail: u64,
    /// Guest GGTT (PTE) accesses.
    pub pte: u64,
    /// Everything else that was accepted.
    pub other: u64,
    /// Accesses (in `other`) to offsets that the register table does not
    /// name: treated as scratch, counted here.
    pub unknown: u64,
    pub reads: u64,
    pub writes: u64,
    /// Writes ignored.
    pub dropped: u64,
    /// Events handed to the caller.
    pub events: u64,
    /// Accesses refused with an error.
    pub rejected: u64,
}

impl TrapStats {
    /// Accepted traps.
    pub fn total(&self) -> u64 {
        self.pm + self.tail + self.pte + self.other
    }
}

/// Where in BAR0 an (already validated) access goes.
enum Region {
    Regs(u32),
    Ggtt,
}

/// Check size, alignment and range of an access.
#[inline]
fn decode(offset: u64, size: u32) -> Result<Region, MmioError> {
    if !matches!(size, 1 | 2 | 4 | 8) {
        return Err(MmioError::BadSize);
    }
    // A power of two (checked above): a mask, not a division.
    if offset & (size as u64 - 1) != 0 {
        return Err(MmioError::Misaligned);
    }
    let end = offset
        .checked_add(size as u64)
        .ok_or(MmioError::OutOfRange)?;
    if end > BAR0_SIZE {
        return Err(MmioError::OutOfRange);
    }
    if end <= REG_RANGE as u64 {
        return Ok(Region::Regs(offset as u32));
    }
    if offset >= GGTT_VIEW_BASE {
        if size < 4 {
            return Err(MmioError::BadSize);
        }
        return Ok(Region::Ggtt);
    }
    Err(MmioError::Unbacked)
}

/// Where a well-formed BAR0 access goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar0Region {
    /// The register file (PVINFO included): [`VgpuMmio`].
    Registers,
    /// The guest GGTT view: [`super::ggtt::Ggtt`].
    GgttWindow,
}

/// Check size, alignment and range of an access of `size` bytes at BAR0
/// `offset`, and say which emulation serves it.
#[inline]
pub fn classify(offset: u64, size: u32) -> Result<Bar0Region, MmioError> {
    decode(offset, size).map(|r| match r {
        Region::Regs(_) => Bar0Region::Registers,
        Region::Ggtt => Bar0Region::GgttWindow,
    })
}

enum Category {
    Pm,
    Tail,
    Other { unknown: bool },
}

/// The trap category of an access at `off`, whose table row is `hit`
/// (looked up once per access, see [`lookup`]).
#[inline]
fn category(off: u32, hit: Option<RegHit>) -> Category {
    if in_pvinfo(off) {
        return Category::Other { unknown: false };
    }
    match hit.map(|h| h.kind()) {
        Some(RegKind::ForcewakeReq) | Some(RegKind::ForcewakeAck) => Category::Pm,
        Some(RegKind::RingTail(_)) => Category::Tail,
        Some(_) => Category::Other { unknown: false },
        None => Category::Other { unknown: true },
    }
}

#[inline]
fn in_pvinfo(off: u32) -> bool {
    (PVINFO_BASE..PVINFO_BASE + PVINFO_SIZE).contains(&off)
}

/// The table row of the dword at `off` (none in the PVINFO page, which has
/// its own emulation).
#[inline]
fn lookup(off: u32) -> Option<RegHit> {
    if in_pvinfo(off) {
        None
    } else {
        regs::lookup(off)
    }
}

/// Whether the dword at `off` is a plain register: in the register range,
/// named by no table row ([`regs::lookup`]), outside the PVINFO page and not
/// an engine's `RING_EIR` (whose value lives with the engines).  Reading
/// one returns its vreg; writing one stores its vreg; neither raises an
/// event nor needs another mediator: the trap path's fast path
/// ([`VgpuMmio::read_plain`], [`VgpuMmio::write_plain`]).
#[inline(always)]
pub fn plain(off: u32) -> bool {
    off < REG_RANGE
        && !in_pvinfo(off)
        && !regs::is_named(off)
        && !EngineId::ALL
            .iter()
            .any(|e| off & !3 == e.mmio_base() + ring::EIR)
}

/// The offset of a well-formed register access of `len` bytes at `offset`
/// whose dwords are all [`plain`]; `None` for anything else.
#[inline(always)]
fn plain_span(vregs: &[u32], offset: u64, len: usize) -> Option<u32> {
    let size = len as u64;
    if !matches!(len, 1 | 2 | 4 | 8)
        || offset & (size - 1) != 0
        || offset
            .checked_add(size)
            .is_none_or(|end| end > u64::from(REG_RANGE))
        || vregs.len() < VREG_DWORDS
    {
        return None;
    }
    let off = offset as u32;
    (plain(off) && (len != 8 || plain(off + 4))).then_some(off)
}

/// The `mask` bits of `value` into the plain dword at `off`, its place in
/// the vreg file found once; a page without a place goes the way of
/// [`set_vreg`] (a spare page, or dropped: `false`).
#[inline(always)]
fn store_plain(vregs: &mut [u32], off: u32, value: u32, mask: u32) -> bool {
    match regs::vreg_index(vregs, off).and_then(|i| vregs.get_mut(i)) {
        Some(d) => {
            *d = merge(*d, value, mask);
            true
        }
        None => set_vreg(vregs, off, merge(0, value, mask)),
    }
}

/// The little-endian value of a register-sized buffer (1, 2, 4 or 8 bytes;
/// 0 for any other): one load of its width, not a byte loop (which the
/// compiler makes a call to `memcpy`).
#[inline(always)]
fn le_value(buf: &[u8]) -> u64 {
    match *buf {
        [a] => u64::from(a),
        [a, b] => u64::from(u16::from_le_bytes([a, b])),
        [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
        _ => 0,
    }
}

/// The low `buf.len()` bytes of `v` into a register-sized buffer, as
/// [`le_value`] reads them.
#[inline(always)]
fn put_le(buf: &mut [u8], v: u64) {
    let b = v.to_le_bytes();
    match buf {
        [a] => *a = b[0],
        [x, y] => [*x, *y] = [b[0], b[1]],
        [_, _, _, _] => buf.copy_from_slice(&b[..4]),
        [_, _, _, _, _, _, _, _] => buf.copy_from_slice(&b),
        _ => {}
    }
}

/// Where `FORCEWAKE_ACK` lives in the vreg file (a fixed page).
const FORCEWAKE_ACK_AT: usize = regs::fixed_index(regs::FORCEWAKE_ACK);

/// Result of one dword write.
enum DwordWrite {
    Stored,
    Dropped,
    Event(TrapEvent),
}

#[inline]
const fn merge(old: u32, value: u32, mask: u32) -> u32 {
    (old & !mask) | (value & mask)
}

/// Byte mask of a `size`-byte access at byte `shift` of a dword.
#[inline]
const fn lane_mask(size: u32, byte: u32) -> u32 {
    let m: u32 = match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    };
    m << (byte * 8)
}

/// The vreg at BAR0 offset `offset` (its dword); 0 if outside the file
/// (or on a page of the sparse file that has no place, [`regs::vreg_get`]).
#[inline]
pub fn vreg(vregs: &[u32], offset: u32) -> u32 {
    regs::vreg_get(vregs, offset)
}

/// Set the vreg at `offset` (for mediators that update virtual state, e.g.
/// HEAD after execution or IIR bits on an interrupt); `false` if outside,
/// or if a non-zero value finds no spare page ([`regs::vreg_mut`]).  Zero
/// on a page without a place is already what it reads: nothing is taken.
pub fn set_vreg(vregs: &mut [u32], offset: u32, value: u32) -> bool {
    if value == 0 && offset < REG_RANGE && regs::vreg_index(vregs, offset).is_none() {
        return vregs.len() >= VREG_DWORDS;
    }
    match regs::vreg_mut(vregs, offset) {
        Some(v) => {
            *v = value;
            true
        }
        None => false,
    }
}

/// The ring registers of one engine as the guest programmed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingRegs {
    pub head: u32,
    pub tail: u32,
    pub start: u32,
    pub ctl: RingCtl,
    pub hws_pga: u32,
    pub pp_dir_base: u32,
}

/// Read `engine`'s ring registers from the vreg file.
pub fn ring_regs(vregs: &[u32], engine: EngineId) -> RingRegs {
    let r = |rel| vreg(vregs, engine.reg(rel));
    RingRegs {
        head: r(ring::HEAD),
        tail: r(ring::TAIL),
        start: r(ring::START),
        ctl: RingCtl(r(ring::CTL)),
        hws_pga: r(ring::HWS_PGA),
        pp_dir_base: r(ring::PP_DIR_BASE),
    }
}

/// The BAR0 emulation of one vGPU: its PVINFO content, its fence count and
/// its trap counters.  The vreg file and GGTT view are passed to every call.
#[derive(Clone, Debug)]
pub struct VgpuMmio {
    pvinfo: PvInfo,
    stats: TrapStats,
}

impl VgpuMmio {
    pub fn new(pvinfo: PvInfo) -> Self {
        Self {
            pvinfo,
            stats: TrapStats::default(),
        }
    }
    pub fn pvinfo(&self) -> &PvInfo {
        &self.pvinfo
    }
    /// Advertise `pvinfo` from now on (a migration target taking the
    /// source's GM view and id): its read-only fields go into the page in
    /// `vregs`; what the guest wrote there stays.
    pub fn set_pvinfo(&mut self, pvinfo: PvInfo, vregs: &mut [u32]) {
        self.pvinfo = pvinfo;
        if let Some(page) = pvinfo_page_mut(vregs) {
            for (i, d) in page.iter_mut().take(PVINFO_DWORDS).enumerate() {
                let rel = (i as u32) * 4;
                if !PvInfo::guest_writable(rel) {
                    *d = self.pvinfo.read(&[], rel);
                }
            }
        }
    }
    pub fn stats(&self) -> &TrapStats {
        &self.stats
    }
    pub fn reset_stats(&mut self) {
        self.stats = TrapStats::default();
    }
    fn fence_count(&self) -> u32 {
        self.pvinfo.fence_num
    }

    /// Bring the vreg file to its power-on state: all zero except the
    /// read-only registers and the PVINFO page.
    pub fn reset_vregs(&self, vregs: &mut [u32]) {
        vregs.iter_mut().for_each(|v| *v = 0);
        for r in regs::REGISTERS {
            if let RegKind::ReadOnly(v) = r.kind {
                for i in 0..r.count {
                    for d in 0..r.width.dwords() {
                        set_vreg(vregs, r.offset + i * r.stride + 4 * d, v);
                    }
                }
            }
        }
        if let Some(page) = pvinfo_page_mut(vregs) {
            self.pvinfo.fill(page);
        }
    }

    /// The dword at `off`, whose table row is `hit` (from [`lookup`]).
    #[inline(always)]
    fn read_dword(&self, vregs: &[u32], off: u32, hit: Option<RegHit>) -> u32 {
        if let Some(rel) = off.checked_sub(PVINFO_BASE).filter(|r| *r < PVINFO_SIZE) {
            return self.pvinfo.read(pvinfo_page(vregs).unwrap_or(&[]), rel);
        }
        match hit {
            Some(h) => match h.kind() {
                RegKind::ReadOnly(v) => v,
                RegKind::Fence if h.index >= self.fence_count() => 0,
                _ => vreg(vregs, off),
            },
            None => vreg(vregs, off),
        }
    }

    /// A write of the `mask` bits of `value` to the dword at `off`, whose
    /// table row is `hit` (from [`lookup`]).
    #[inline(always)]
    fn write_dword(
        &self,
        vregs: &mut [u32],
        off: u32,
        value: u32,
        mask: u32,
        hit: Option<RegHit>,
    ) -> DwordWrite {
        if let Some(rel) = off.checked_sub(PVINFO_BASE).filter(|r| *r < PVINFO_SIZE) {
            let Some(page) = pvinfo_page_mut(vregs) else {
                return DwordWrite::Dropped;
            };
            return match self.pvinfo.write(page, rel, value, mask) {
                PvWrite::Stored => DwordWrite::Stored,
                PvWrite::Dropped => DwordWrite::Dropped,
                PvWrite::Event(e) => DwordWrite::Event(TrapEvent::PvInfo(e)),
            };
        }
        // The dword's place in the vreg file, found once: a table row's
        // page is a fixed one, so it always has a place.
        let at = regs::vreg_index(vregs, off);
        let old = at.and_then(|i| vregs.get(i)).copied().unwrap_or(0);
        let new = merge(old, value, mask);
        let Some(hit) = hit else {
            // A plain register: kept unless its page finds no spare page
            // of the sparse vreg file (then it reads 0, and the write is
            // counted as dropped).
            return if set_vreg(vregs, off, new) {
                DwordWrite::Stored
            } else {
                DwordWrite::Dropped
            };
        };
        let store = |vregs: &mut [u32], v: u32| match at.and_then(|i| vregs.get_mut(i)) {
            Some(d) => *d = v,
            None => {
                set_vreg(vregs, off, v);
            }
        };
        match hit.kind() {
            RegKind::Scratch
            | RegKind::RingHead(_)
            | RegKind::RingStart(_)
            | RegKind::RingCtl(_)
            | RegKind::HwsPga(_) => {
                store(vregs, new);
                DwordWrite::Stored
            }
            RegKind::ReadOnly(_) | RegKind::ForcewakeAck => DwordWrite::Dropped,
            RegKind::RingTail(engine) => {
                store(vregs, new);
                DwordWrite::Event(TrapEvent::RingTail { engine, tail: new })
            }
            RegKind::PpDirBase(engine) => {
                store(vregs, new);
                DwordWrite::Event(TrapEvent::PpDirBase { engine, value: new })
            }
            RegKind::Iir => {
                // write one to clear, only in the written bytes
                let v = old & !(value & mask);
                store(vregs, v);
                DwordWrite::Event(TrapEvent::Irq {
                    reg: IrqReg::Iir,
                    value: value & mask,
                })
            }
            RegKind::Imr => {
                store(vregs, new);
                DwordWrite::Event(TrapEvent::Irq {
                    reg: IrqReg::Imr,
                    value: new,
                })
            }
            RegKind::Ier => {
                store(vregs, new);
                DwordWrite::Event(TrapEvent::Irq {
                    reg: IrqReg::Ier,
                    value: new,
                })
            }
            RegKind::Gdrst => {
                // the reset completes before the write returns: reads see 0
                store(vregs, 0);
                let g = Gdrst(value & mask);
                if g.full() || g.render() || g.blitter() {
                    DwordWrite::Event(TrapEvent::Reset(g))
                } else {
                    DwordWrite::Stored
                }
            }
            RegKind::ForcewakeReq => {
                // masked register: bytes not written carry no mask bits
                let v = regs::masked_write(old, value & mask);
                store(vregs, v);
                if let Some(d) = vregs.get_mut(FORCEWAKE_ACK_AT) {
                    *d = v & 0xFFFF;
                }
                DwordWrite::Stored
            }
            RegKind::Fence => {
                if hit.index >= self.fence_count() {
                    return DwordWrite::Dropped;
                }
                store(vregs, new);
                let base = hit.element_offset();
                let value =
                    (vreg(vregs, base) as u64) | ((vreg(vregs, base.wrapping_add(4)) as u64) << 32);
                DwordWrite::Event(TrapEvent::Fence {
                    index: hit.index,
                    value,
                })
            }
            RegKind::Display(reg) => {
                store(vregs, new);
                DwordWrite::Event(TrapEvent::Display { reg, value: new })
            }
        }
    }

    #[inline]
    fn count(&mut self, off: u32, hit: Option<RegHit>, write: bool) {
        match category(off, hit) {
            Category::Pm => self.stats.pm += 1,
            Category::Tail => self.stats.tail += 1,
            Category::Other { unknown } => {
                self.stats.other += 1;
                self.stats.unknown += unknown as u64;
            }
        }
        self.count_rw(write);
    }

    /// Count one accepted access to the GGTT window (served by the shadow
    /// GGTT, see the module documentation); `dropped`: a write outside the
    /// vGPU's slices.
    pub fn count_pte(&mut self, write: bool, dropped: bool) {
        self.stats.pte += 1;
        self.count_rw(write);
        if dropped {
            self.stats.dropped += 1;
        }
    }

    #[inline]
    fn count_rw(&mut self, write: bool) {
        if write {
            self.stats.writes += 1;
        } else {
            self.stats.reads += 1;
        }
    }

    #[inline]
    fn decode_checked(
        &mut self,
        vregs: &[u32],
        offset: u64,
        size: u32,
    ) -> Result<Region, MmioError> {
        let r = decode(offset, size).and_then(|r| {
            if vregs.len() < VREG_DWORDS {
                Err(MmioError::BadState)
            } else {
                Ok(r)
            }
        });
        if r.is_err() {
            self.stats.rejected += 1;
        }
        r
    }

    /// A guest read of `size` bytes at BAR0 `offset`.
    pub fn read(&mut self, vregs: &[u32], offset: u64, size: u32) -> Result<u64, MmioError> {
        let off = match self.decode_checked(vregs, offset, size)? {
            Region::Regs(off) => off,
            Region::Ggtt => return Err(MmioError::GgttWindow),
        };
        // One table lookup serves the counters and the emulation.
        let hit = lookup(off);
        self.count(off, hit, false);
        Ok(if size == 8 {
            let hi = self.read_dword(vregs, off + 4, lookup(off + 4));
            (self.read_dword(vregs, off, hit) as u64) | ((hi as u64) << 32)
        } else {
            let byte = off & 3;
            let d = self.read_dword(vregs, off & !3, hit);
            ((d & lane_mask(size, byte)) >> (byte * 8)) as u64
        })
    }

    /// A guest write of the low `size` bytes of `value` at BAR0 `offset`.
    pub fn write(
        &mut self,
        vregs: &mut [u32],
        offset: u64,
        size: u32,
        value: u64,
    ) -> Result<MmioOutcome, MmioError> {
        let off = match self.decode_checked(vregs, offset, size)? {
            Region::Regs(off) => off,
            Region::Ggtt => return Err(MmioError::GgttWindow),
        };
        let hit = lookup(off);
        self.count(off, hit, true);
        let out = if size == 8 {
            let a = self.write_dword(vregs, off, value as u32, !0, hit);
            let b = self.write_dword(vregs, off + 4, (value >> 32) as u32, !0, lookup(off + 4));
            combine(a, b)
        } else {
            let byte = off & 3;
            let v = (value as u32) << (byte * 8);
            combine(
                self.write_dword(vregs, off & !3, v, lane_mask(size, byte), hit),
                DwordWrite::Dropped,
            )
        };
        match out {
            MmioOutcome::Dropped => self.stats.dropped += 1,
            MmioOutcome::Event(_) => self.stats.events += 1,
            MmioOutcome::Events(..) => self.stats.events += 2,
            _ => {}
        }
        Ok(out)
    }

    /// [`read`](Self::read) into a little-endian byte buffer of 1, 2, 4 or 8
    /// bytes (what a VFIO region read hands over).
    #[inline]
    pub fn read_bytes(
        &mut self,
        vregs: &[u32],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), MmioError> {
        let size = u32::try_from(buf.len()).map_err(|_| MmioError::BadSize)?;
        let v = self.read(vregs, offset, size)?;
        let bytes = v.to_le_bytes();
        for (d, s) in buf.iter_mut().zip(bytes.iter()) {
            *d = *s;
        }
        Ok(())
    }

    /// The fast path of [`read_bytes`](Self::read_bytes): a well-formed
    /// read of [`plain`] dwords only is served here, with the same result
    /// and counters; `false` (nothing read, nothing counted) sends the
    /// caller to the full path.
    #[inline(always)]
    pub fn read_plain(&mut self, vregs: &[u32], offset: u64, buf: &mut [u8]) -> bool {
        let Some(off) = plain_span(vregs, offset, buf.len()) else {
            return false;
        };
        let lo = vreg(vregs, off & !3);
        let v = if buf.len() == 8 {
            u64::from(lo) | (u64::from(vreg(vregs, off + 4)) << 32)
        } else {
            u64::from(lo >> ((off & 3) * 8))
        };
        put_le(buf, v);
        self.count_plain(false);
        true
    }

    /// The fast path of [`write_bytes`](Self::write_bytes), as
    /// [`read_plain`](Self::read_plain): a plain register raises no event,
    /// so there is nothing for the caller to route.
    #[inline(always)]
    pub fn write_plain(&mut self, vregs: &mut [u32], offset: u64, buf: &[u8]) -> bool {
        let Some(off) = plain_span(vregs, offset, buf.len()) else {
            return false;
        };
        let value = le_value(buf);
        let stored = if buf.len() == 8 {
            // Both halves, as the full path does, each kept or dropped.
            let a = store_plain(vregs, off, value as u32, !0);
            let b = store_plain(vregs, off + 4, (value >> 32) as u32, !0);
            a || b
        } else {
            let byte = off & 3;
            let mask = lane_mask(buf.len() as u32, byte);
            store_plain(vregs, off & !3, (value as u32) << (byte * 8), mask)
        };
        self.count_plain(true);
        if !stored {
            self.stats.dropped += 1;
        }
        true
    }

    /// What [`count`](Self::count) counts for a plain register.
    #[inline(always)]
    fn count_plain(&mut self, write: bool) {
        // A u64 count of traps does not wrap: no overflow check (a branch
        // on every access of a kernel built with them).
        let s = &mut self.stats;
        s.other = s.other.wrapping_add(1);
        s.unknown = s.unknown.wrapping_add(1);
        if write {
            s.writes = s.writes.wrapping_add(1);
        } else {
            s.reads = s.reads.wrapping_add(1);
        }
    }

    /// [`write`](Self::write) from a little-endian byte buffer of 1, 2, 4 or 8
    /// bytes (what a VFIO region write hands over).
    #[inline]
    pub fn write_bytes(
        &mut self,
        vregs: &mut [u32],
        offset: u64,
        buf: &[u8],
    ) -> Result<MmioOutcome, MmioError> {
        let size = u32::try_from(buf.len()).map_err(|_| MmioError::BadSize)?;
        if size > 8 {
            self.stats.rejected += 1;
            return Err(MmioError::BadSize);
        }
        let mut bytes = [0u8; 8];
        for (d, s) in bytes.iter_mut().zip(buf.iter()) {
            *d = *s;
        }
        self.write(vregs, offset, size, u64::from_le_bytes(bytes))
    }
}

fn pvinfo_page(vregs: &[u32]) -> Option<&[u32]> {
    let lo = regs::fixed_index(PVINFO_BASE);
    vregs.get(lo..lo + PVINFO_DWORDS)
}

fn pvinfo_page_mut(vregs: &mut [u32]) -> Option<&mut [u32]> {
    let lo = regs::fixed_index(PVINFO_BASE);
    vregs.get_mut(lo..lo + PVINFO_DWORDS)
}

#[inline]
fn combine(a: DwordWrite, b: DwordWrite) -> MmioOutcome {
    use DwordWrite::*;
    match (a, b) {
        (
            Event(TrapEvent::Fence { index: i, .. }),
            Event(f @ TrapEvent::Fence { index: j, .. }),
        ) if i == j => MmioOutcome::Event(f),
        (Event(e), Event(f)) => MmioOutcome::Events(e, f),
        (Event(e), _) | (_, Event(e)) => MmioOutcome::Event(e),
        (Dropped, Dropped) => MmioOutcome::Dropped,
        _ => MmioOutcome::Written,
    }
}

#[cfg(test)]
mod tests {
    use super::super::irq::{BCS_USER_INTERRUPT, RCS_USER_INTERRUPT};
    use super::super::mem::GmRange;
    use super::super::partition::Partition;
    use super::super::pvinfo::{vgtif, VGT_MAGIC};
    use super::regs::*;
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    const MIB: u64 = 1 << 20;

    struct Vgpu {
        m: VgpuMmio,
        vregs: Vec<u32>,
    }

    impl Vgpu {
        fn new() -> Self {
            let part = Partition {
                aperture: GmRange::new(0, 64 * MIB),
                high: GmRange::new(256 * MIB, 128 * MIB),
                fence_base: 8,
                fence_count: 4,
            };
            let m = VgpuMmio::new(PvInfo::new(1, 0, &part).unwrap());
            let mut vregs = vec![0xAAAA_AAAA; VREG_DWORDS];
            m.reset_vregs(&mut vregs);
            Vgpu { m, vregs }
        }
        fn r(&mut self, off: u64, size: u32) -> Result<u64, MmioError> {
            self.m.read(&self.vregs, off, size)
        }
        fn w(&mut self, off: u64, size: u32, v: u64) -> Result<MmioOutcome, MmioError> {
            self.m.write(&mut self.vregs, off, size, v)
        }
    }

    #[test]
    fn access_validation() {
        let mut g = Vgpu::new();
        assert_eq!(g.r(0x1000, 3), Err(MmioError::BadSize));
        assert_eq!(g.r(0x1000, 16), Err(MmioError::BadSize));
        assert_eq!(g.r(0x1000, 0), Err(MmioError::BadSize));
        assert_eq!(g.r(0x1002, 4), Err(MmioError::Misaligned));
        assert_eq!(g.r(0x1004, 8), Err(MmioError::Misaligned));
        assert_eq!(g.w(0x1001, 2, 0), Err(MmioError::Misaligned));
        assert_eq!(g.r(BAR0_SIZE, 4), Err(MmioError::OutOfRange));
        assert_eq!(g.r(u64::MAX - 7, 8), Err(MmioError::OutOfRange));
        assert_eq!(g.r(2 * MIB, 4), Err(MmioError::Unbacked));
        assert_eq!(g.w(8 * MIB - 4, 4, 1), Err(MmioError::Unbacked));
        assert_eq!(g.r(GGTT_VIEW_BASE, 2), Err(MmioError::BadSize));
        assert_eq!(g.w(GGTT_VIEW_BASE + 1, 1, 0), Err(MmioError::BadSize));
        assert_eq!(g.r(GGTT_VIEW_BASE + 4, 8), Err(MmioError::Misaligned));
        assert!(g.r(2 * MIB - 8, 8).is_ok());
        assert_eq!(g.r(BAR0_SIZE - 8, 8), Err(MmioError::GgttWindow));
        assert_eq!(g.m.stats().rejected, 13);
        // byte-buffer entry points
        let mut b = [0u8; 3];
        assert_eq!(g.m.read_bytes(&g.vregs, 0, &mut b), Err(MmioError::BadSize));
        assert_eq!(
            g.m.write_bytes(&mut g.vregs, 0, &[0; 9]),
            Err(MmioError::BadSize)
        );
        assert_eq!(
            g.m.write_bytes(&mut g.vregs, 0, &[]),
            Err(MmioError::BadSize)
        );
        // a short vreg file is a reported error, not a panic
        let mut short = vec![0u32; 16];
        assert_eq!(g.m.read(&short, 0x2030, 4), Err(MmioError::BadState));
        assert_eq!(
            g.m.write(&mut short, 0x2030, 4, 1),
            Err(MmioError::BadState)
        );
    }

    #[test]
    fn scratch_and_unknown_registers() {
        let mut g = Vgpu::new();
        assert_eq!(g.r(0x1234 * 4, 4), Ok(0), "reset cleared the vregs");
        assert_eq!(g.w(0x4000, 4, 0x1122_3344), Ok(MmioOutcome::Written));
        assert_eq!(g.r(0x4000, 4), Ok(0x1122_3344));
        assert_eq!(g.r(0x4001, 1), Ok(0x33));
        assert_eq!(g.r(0x4002, 2), Ok(0x1122));
        assert_eq!(g.w(0x4003, 1, 0xFF), Ok(MmioOutcome::Written));
        assert_eq!(
            g.r(0x4000, 4),
            Ok(0xFF22_3344),
            "sub-dword write is read-modify-write"
        );
        assert_eq!(
            g.w(0x4008, 8, 0x0102_0304_0506_0708),
            Ok(MmioOutcome::Written)
        );
        assert_eq!(g.r(0x4008, 4), Ok(0x0506_0708));
        assert_eq!(g.r(0x400C, 4), Ok(0x0102_0304));
        assert_eq!(g.r(0x4008, 8), Ok(0x0102_0304_0506_0708));
        let s = *g.m.stats();
        assert_eq!(s.unknown, s.other, "all these are unnamed offsets");
        assert_eq!(s.unknown, 11);
        // a named scratch register is not "unknown"
        g.w(u64::from(EngineId::Rcs.reg(ring::HWSTAM)), 4, 7)
            .unwrap();
        assert_eq!(g.m.stats().unknown, 11);
        assert_eq!(g.r(u64::from(EngineId::Rcs.reg(ring::HWSTAM)), 4), Ok(7));
    }

    #[test]
    fn a_guest_cannot_grow_the_sparse_vreg_file() {
        let mut g = Vgpu::new();
        // One dword on every page of the register range that has no fixed
        // place: the first SPARE_PAGES are kept, the rest dropped (read 0).
        let pages: Vec<u64> = (0..REG_PAGES as u64)
            .map(|p| p * 0x1000 + 0x20)
            .filter(|&o| regs::fixed_vreg_index(o as u32).is_none() && o != 0x4020)
            .collect();
        let kept = pages
            .iter()
            .filter(|&&o| g.w(o, 4, o | 1) == Ok(MmioOutcome::Written))
            .count();
        assert_eq!(kept, SPARE_PAGES);
        assert_eq!(g.m.stats().dropped, (pages.len() - SPARE_PAGES) as u64);
        assert_eq!(g.r(pages[0], 4), Ok(pages[0] | 1));
        assert_eq!(g.r(pages[SPARE_PAGES], 4), Ok(0));
        // zero needs no page
        assert_eq!(g.w(pages[SPARE_PAGES] + 4, 4, 0), Ok(MmioOutcome::Written));
        // registers of the table keep working, and a reset gives the spares back
        g.w(u64::from(EngineId::Rcs.reg(ring::HWSTAM)), 4, 7)
            .unwrap();
        assert_eq!(g.r(u64::from(EngineId::Rcs.reg(ring::HWSTAM)), 4), Ok(7));
        g.m.reset_vregs(&mut g.vregs);
        assert_eq!(regs::spare_pages_used(&g.vregs), 0);
        assert_eq!(g.r(pages[0], 4), Ok(0));
        assert_eq!(g.w(pages[SPARE_PAGES], 4, 3), Ok(MmioOutcome::Written));
    }

    #[test]
    fn read_only_registers() {
        let mut g = Vgpu::new();
        g.vregs[regs::fixed_index(GT_THREAD_STATUS)] = 0x55; // even a corrupted vreg reads right
        assert_eq!(
            g.w(GT_THREAD_STATUS as u64, 4, 0xFFFF),
            Ok(MmioOutcome::Dropped)
        );
        assert_eq!(g.r(GT_THREAD_STATUS as u64, 4), Ok(0));
        assert_eq!(g.m.stats().dropped, 1);
    }

    #[test]
    fn ring_tail_is_a_submission_event() {
        let mut g = Vgpu::new();
        g.w(u64::from(EngineId::Rcs.reg(ring::START)), 4, 0x10_0000)
            .unwrap();
        g.w(
            u64::from(EngineId::Rcs.reg(ring::CTL)),
            4,
            RingCtl(0).with_enable(true).with_length(0).0 as u64,
        )
        .unwrap();
        assert_eq!(
            g.w(u64::from(EngineId::Rcs.reg(ring::TAIL)), 4, 0x40),
            Ok(MmioOutcome::Event(TrapEvent::RingTail {
                engine: EngineId::Rcs,
                tail: 0x40
            }))
        );
        assert_eq!(
            g.w(u64::from(EngineId::Bcs.reg(ring::TAIL)), 4, 0x80),
            Ok(MmioOutcome::Event(TrapEvent::RingTail {
                engine: EngineId::Bcs,
                tail: 0x80
            }))
        );
        let r = ring_regs(&g.vregs, EngineId::Rcs);
        assert_eq!(
            (r.start, r.tail, r.ctl.enable(), r.ctl.size_bytes()),
            (0x10_0000, 0x40, true, 4096)
        );
        assert_eq!(ring_regs(&g.vregs, EngineId::Bcs).tail, 0x80);
        // an 8-byte write to TAIL+HEAD: one event (HEAD is not mediated)
        assert_eq!(
            g.w(
                u64::from(EngineId::Rcs.reg(ring::TAIL)),
                8,
                (0x20u64 << 32) | 0x60
            ),
            Ok(MmioOutcome::Event(TrapEvent::RingTail {
                engine: EngineId::Rcs,
                tail: 0x60
            }))
        );
        assert_eq!(ring_regs(&g.vregs, EngineId::Rcs).head, 0x20);
        assert_eq!(g.m.stats().tail, 3);
        assert_eq!(g.m.stats().events, 3);
        // a byte write to TAIL still reports the whole merged tail
        assert_eq!(
            g.w(u64::from(EngineId::Rcs.reg(ring::TAIL)) + 1, 1, 0x01),
            Ok(MmioOutcome::Event(TrapEvent::RingTail {
                engine: EngineId::Rcs,
                tail: 0x160
            }))
        );
    }

    #[test]
    fn forcewake_is_emulated() {
        let mut g = Vgpu::new();
        assert_eq!(
            g.w(FORCEWAKE_REQ as u64, 4, 0x0001_0001),
            Ok(MmioOutcome::Written)
        );
        assert_eq!(g.r(FORCEWAKE_ACK as u64, 4), Ok(1));
        assert_eq!(
            g.w(FORCEWAKE_REQ as u64, 4, 0x0002_0002),
            Ok(MmioOutcome::Written)
        );
        assert_eq!(g.r(FORCEWAKE_ACK as u64, 4), Ok(3));
        assert_eq!(
            g.w(FORCEWAKE_REQ as u64, 4, 0x0001_0000),
            Ok(MmioOutcome::Written)
        );
        assert_eq!(g.r(FORCEWAKE_ACK as u64, 4), Ok(2));
        // low-half-only write carries no mask bits: no change
        g.w(FORCEWAKE_REQ as u64, 2, 0xFFFF).unwrap();
        assert_eq!(g.r(FORCEWAKE_ACK as u64, 4), Ok(2));
        assert_eq!(g.w(FORCEWAKE_ACK as u64, 4, 0), Ok(MmioOutcome::Dropped));
        assert_eq!(g.r(FORCEWAKE_ACK as u64, 4), Ok(2));
        assert_eq!(g.m.stats().pm, 10);
        assert_eq!(g.m.stats().events, 0, "PM never leaves the vGPU");
    }

    #[test]
    fn interrupt_registers() {
        let mut g = Vgpu::new();
        set_vreg(
            &mut g.vregs,
            GT_IIR,
            RCS_USER_INTERRUPT | BCS_USER_INTERRUPT,
        );
        assert_eq!(
            g.w(GT_IIR as u64, 4, RCS_USER_INTERRUPT as u64),
            Ok(MmioOutcome::Event(TrapEvent::Irq {
                reg: IrqReg::Iir,
                value: RCS_USER_INTERRUPT
            })),
            "the event carries the bits to clear"
        );
        assert_eq!(g.r(GT_IIR as u64, 4), Ok(BCS_USER_INTERRUPT as u64));
        // a byte write clears only within its byte
        set_vreg(&mut g.vregs, GT_IIR, 0xFFFF_FFFF);
        g.w(GT_IIR as u64 + 1, 1, 0xFF).unwrap();
        assert_eq!(g.r(GT_IIR as u64, 4), Ok(0xFFFF_00FF));
        assert_eq!(
            g.w(GT_IMR as u64, 4, 0xFFFF_FFFE),
            Ok(MmioOutcome::Event(TrapEvent::Irq {
                reg: IrqReg::Imr,
                value: 0xFFFF_FFFE
            }))
        );
        assert_eq!(
            g.w(GT_IER as u64, 4, 1),
            Ok(MmioOutcome::Event(TrapEvent::Irq {
                reg: IrqReg::Ier,
                value: 1
            }))
        );
        assert_eq!(g.r(GT_IER as u64, 4), Ok(1));
    }

    #[test]
    fn reset_register() {
        let mut g = Vgpu::new();
        assert_eq!(
            g.w(GDRST as u64, 4, 0b1000),
            Ok(MmioOutcome::Event(TrapEvent::Reset(Gdrst(0b1000))))
        );
        assert_eq!(g.r(GDRST as u64, 4), Ok(0), "reset acked at once");
        assert_eq!(
            g.w(GDRST as u64, 4, 1),
            Ok(MmioOutcome::Event(TrapEvent::Reset(Gdrst(1))))
        );
        assert_eq!(
            g.w(GDRST as u64, 4, 0b100),
            Ok(MmioOutcome::Written),
            "no known domain"
        );
        assert_eq!(g.r(GDRST as u64, 4), Ok(0));
    }

    #[test]
    fn pp_dir_base_and_display() {
        let mut g = Vgpu::new();
        assert_eq!(
            g.w(
                u64::from(EngineId::Rcs.reg(ring::PP_DIR_BASE)),
                4,
                0x1234_0000
            ),
            Ok(MmioOutcome::Event(TrapEvent::PpDirBase {
                engine: EngineId::Rcs,
                value: 0x1234_0000
            }))
        );
        assert_eq!(
            g.w(DSPASURF as u64, 4, 0x20_0000),
            Ok(MmioOutcome::Event(TrapEvent::Display {
                reg: DisplayReg::PlaneSurf,
                value: 0x20_0000
            }))
        );
        assert_eq!(
            g.w(PIPEASRC as u64, 4, (1023 << 16) | 767),
            Ok(MmioOutcome::Event(TrapEvent::Display {
                reg: DisplayReg::PipeSrc,
                value: (1023 << 16) | 767
            }))
        );
        // an 8-byte write to DSPACNTR + DSPALINOFF(unknown): one event
        assert!(matches!(
            g.w(DSPACNTR as u64, 8, 0x8000_0000),
            Ok(MmioOutcome::Event(TrapEvent::Display {
                reg: DisplayReg::PlaneCtl,
                ..
            }))
        ));
        assert_eq!(g.r(DSPASTRIDE as u64, 4), Ok(0));
    }

    #[test]
    fn two_events_in_one_qword() {
        let mut g = Vgpu::new();
        // GT_IIR (0x44018) + GT_IER (0x4401C)
        let out = g.w(GT_IIR as u64, 8, 1u64 << 32).unwrap();
        assert_eq!(
            out,
            MmioOutcome::Events(
                TrapEvent::Irq {
                    reg: IrqReg::Iir,
                    value: 0
                },
                TrapEvent::Irq {
                    reg: IrqReg::Ier,
                    value: 1
                }
            )
        );
        assert_eq!(out.events().count(), 2);
        assert_eq!(MmioOutcome::Written.events().count(), 0);
    }

    #[test]
    fn fences_within_the_partition() {
        let mut g = Vgpu::new();
        assert_eq!(
            g.w(fence_offset(3) as u64, 8, 0x1234_5678_9ABC_D001),
            Ok(MmioOutcome::Event(TrapEvent::Fence {
                index: 3,
                value: 0x1234_5678_9ABC_D001
            }))
        );
        assert_eq!(g.r(fence_offset(3) as u64, 8), Ok(0x1234_5678_9ABC_D001));
        assert_eq!(
            g.w(fence_offset(3) as u64 + 4, 4, 0x42),
            Ok(MmioOutcome::Event(TrapEvent::Fence {
                index: 3,
                value: 0x42_9ABC_D001
            }))
        );
        // fence 4 is not this vGPU's (fence_count 4)
        assert_eq!(g.w(fence_offset(4) as u64, 8, 1), Ok(MmioOutcome::Dropped));
        assert_eq!(g.r(fence_offset(4) as u64, 8), Ok(0));
        g.vregs[regs::fixed_index(fence_offset(15))] = 9;
        assert_eq!(g.r(fence_offset(15) as u64, 4), Ok(0));
    }

    #[test]
    fn pvinfo_window() {
        let mut g = Vgpu::new();
        let base = PVINFO_BASE as u64;
        assert_eq!(g.r(base, 8), Ok(VGT_MAGIC));
        assert_eq!(g.r(base + 8, 2), Ok(1));
        assert_eq!(g.r(base + vgtif::MAPPABLE_SIZE as u64, 4), Ok(64 * MIB));
        assert_eq!(g.r(base + vgtif::NONMAPPABLE_BASE as u64, 4), Ok(256 * MIB));
        assert_eq!(g.r(base + vgtif::FENCE_NUM as u64, 4), Ok(4));
        assert_eq!(g.w(base, 8, 0), Ok(MmioOutcome::Dropped));
        assert_eq!(g.r(base, 8), Ok(VGT_MAGIC));
        assert_eq!(
            g.w(base + vgtif::DISPLAY_READY as u64, 4, 1),
            Ok(MmioOutcome::Event(TrapEvent::PvInfo(
                PvEvent::DisplayReady(true)
            )))
        );
        assert_eq!(
            g.w(base + vgtif::G2V_NOTIFY as u64, 4, 4),
            Ok(MmioOutcome::Event(TrapEvent::PvInfo(PvEvent::G2vNotify(4))))
        );
        assert_eq!(
            g.w(base + vgtif::PDP as u64, 8, 0xAB_0000_1000),
            Ok(MmioOutcome::Written)
        );
        assert_eq!(
            PvInfo::pdp(pvinfo_page(&g.vregs).unwrap(), 0),
            Some(0xAB_0000_1000)
        );
    }

    #[test]
    fn ggtt_window_is_classified_not_served() {
        let mut g = Vgpu::new();
        let pte = GGTT_VIEW_BASE + 8 * 5;
        assert_eq!(classify(pte, 8), Ok(Bar0Region::GgttWindow));
        assert_eq!(classify(pte + 4, 4), Ok(Bar0Region::GgttWindow));
        assert_eq!(classify(pte + 4, 8), Err(MmioError::Misaligned));
        assert_eq!(classify(pte, 2), Err(MmioError::BadSize));
        assert_eq!(classify(0x2030, 4), Ok(Bar0Region::Registers));
        assert_eq!(classify(4 * MIB, 4), Err(MmioError::Unbacked));
        assert_eq!(g.w(pte, 8, 1), Err(MmioError::GgttWindow));
        assert_eq!(g.r(pte, 4), Err(MmioError::GgttWindow));
        g.m.count_pte(true, false);
        g.m.count_pte(true, true);
        let s = *g.m.stats();
        assert_eq!((s.pte, s.writes, s.dropped), (2, 2, 1));
    }

    #[test]
    fn byte_buffer_entry_points() {
        let mut g = Vgpu::new();
        let out = g.m.write_bytes(
            &mut g.vregs,
            u64::from(EngineId::Rcs.reg(ring::TAIL)),
            &[0x10, 0, 0, 0],
        );
        assert_eq!(
            out,
            Ok(MmioOutcome::Event(TrapEvent::RingTail {
                engine: EngineId::Rcs,
                tail: 0x10
            }))
        );
        let mut b = [0u8; 2];
        g.m.read_bytes(&g.vregs, PVINFO_BASE as u64, &mut b)
            .unwrap();
        assert_eq!(b, [0x76, 0x47]);
    }

    #[test]
    fn stats_breakdown() {
        let mut g = Vgpu::new();
        g.w(FORCEWAKE_REQ as u64, 4, 0x10001).unwrap();
        g.r(FORCEWAKE_ACK as u64, 4).unwrap();
        g.w(u64::from(EngineId::Rcs.reg(ring::TAIL)), 4, 8).unwrap();
        g.m.count_pte(true, false);
        g.r(u64::from(EngineId::Rcs.reg(ring::HEAD)), 4).unwrap();
        let _ = g.r(3, 4);
        let s = *g.m.stats();
        assert_eq!((s.pm, s.tail, s.pte, s.other, s.rejected), (2, 1, 1, 1, 1));
        assert_eq!((s.reads, s.writes, s.total()), (2, 3, 5));
        g.m.reset_stats();
        assert_eq!(g.m.stats().total(), 0);
    }

    /// The registers whose values live elsewhere ([`super::super::vgpu`]'s
    /// refresh: interrupts, HEAD, EIR; PVINFO; every table row) never take
    /// the fast path; a register the table does not name does.
    #[test]
    fn mediated_registers_are_not_plain() {
        for e in EngineId::ALL {
            for rel in [ring::HEAD, ring::TAIL, ring::START, ring::CTL, ring::EIR] {
                assert!(!plain(e.reg(rel)), "{e:?} {rel:#x}");
            }
        }
        for off in [
            GT_IIR,
            GT_IMR,
            GT_IER,
            GDRST,
            FORCEWAKE_REQ,
            PVINFO_BASE,
            PVINFO_BASE + 0x7FC,
        ] {
            assert!(!plain(off), "{off:#x}");
        }
        assert!(plain(0x4000) && plain(0x1_0000));
        assert!(!plain(REG_RANGE));
    }

    proptest! {
        /// Arbitrary accesses anywhere (including bad ones) never panic, never
        /// change read-only state, and reads after writes of scratch
        /// registers return what was written.
        #[test]
        fn arbitrary_accesses(ops in proptest::collection::vec(
            (any::<bool>(), prop_oneof![0u64..0x20_0010, 0x78000u64..0x79000, 0x7F_FFF0u64..0x100_0010, any::<u64>()],
             prop_oneof![Just(1u32), Just(2), Just(4), Just(8), 0u32..20], any::<u64>()), 1..300)) {
            let mut g = Vgpu::new();
            for (write, off, size, v) in ops {
                if write {
                    let _ = g.w(off, size, v);
                } else {
                    let _ = g.r(off, size);
                }
            }
            prop_assert_eq!(g.r(PVINFO_BASE as u64, 8), Ok(VGT_MAGIC));
            prop_assert_eq!(g.r(PVINFO_BASE as u64 + vgtif::FENCE_NUM as u64, 4), Ok(4));
            prop_assert_eq!(g.r(GT_THREAD_STATUS as u64, 4), Ok(0));
            prop_assert_eq!(g.r(GDRST as u64, 4), Ok(0));
            prop_assert_eq!(g.r(fence_offset(7) as u64, 8), Ok(0));
            let ack = g.r(FORCEWAKE_ACK as u64, 4).unwrap();
            let req = g.r(FORCEWAKE_REQ as u64, 4).unwrap();
            prop_assert_eq!(ack, req & 0xFFFF);
        }

        /// The trap path's fast path ([`VgpuMmio::read_plain`],
        /// [`VgpuMmio::write_plain`], then the full path when it declines)
        /// and the full path alone give the same results, the same vreg
        /// file (spare pages running out included) and the same counters.
        #[test]
        fn plain_fast_path_is_the_full_path(ops in proptest::collection::vec(
            (any::<bool>(), prop_oneof![0u64..0x20_0010, 0x2000u64..0x2100, 0x22000u64..0x22100, 0x44000u64..0x44010, 0x78000u64..0x79000, any::<u64>()],
             prop_oneof![Just(1usize), Just(2), Just(4), Just(8), 0usize..12], any::<u64>()), 1..400)) {
            let mut fast = Vgpu::new();
            let mut full = Vgpu::new();
            for (write, off, len, v) in ops {
                let bytes = v.to_le_bytes();
                if write {
                    let data = &bytes[..len.min(8)];
                    let a = if fast.m.write_plain(&mut fast.vregs, off, data) {
                        Ok(None)
                    } else {
                        fast.m.write_bytes(&mut fast.vregs, off, data).map(Some)
                    };
                    let b = full.m.write_bytes(&mut full.vregs, off, data);
                    match (a, b) {
                        (Ok(None), Ok(o)) => prop_assert!(
                            matches!(o, MmioOutcome::Written | MmioOutcome::Dropped),
                            "a plain write at {:#x} raised {:?}", off, o
                        ),
                        (a, b) => prop_assert_eq!(a, b.map(Some)),
                    }
                } else {
                    let mut x = [0u8; 12];
                    let mut y = [0u8; 12];
                    let a = if fast.m.read_plain(&fast.vregs, off, &mut x[..len]) {
                        Ok(())
                    } else {
                        fast.m.read_bytes(&fast.vregs, off, &mut x[..len])
                    };
                    let b = full.m.read_bytes(&full.vregs, off, &mut y[..len]);
                    prop_assert_eq!(a, b);
                    prop_assert_eq!(x, y);
                }
                prop_assert_eq!(fast.m.stats(), full.m.stats());
            }
            prop_assert!(fast.vregs == full.vregs);
        }

        #[test]
        fn scratch_round_trip(dw in 0x1000u32..0x1_0000, v in any::<u64>(), size in prop_oneof![Just(1u32), Just(2), Just(4), Just(8)]) {
            let mut g = Vgpu::new();
            let off = ((dw * 4) as u64) & !((size as u64) - 1);
            prop_assume!(regs::lookup(off as u32).is_none() && regs::lookup(off as u32 + 4).is_none());
            prop_assume!(!(PVINFO_BASE as u64..(PVINFO_BASE + PVINFO_SIZE) as u64).contains(&off));
            let mask = if size == 8 { u64::MAX } else { (1u64 << (size * 8)) - 1 };
            g.w(off, size, v).unwrap();
            prop_assert_eq!(g.r(off, size), Ok(v & mask));
        }
    }
}
