//! Shared shadow global page table (paper §3.4, Figure 8; partitioning and
//! ballooning of §3.3).
//!
//! Every vGPU has its own *guest* GGTT view (BAR0 offsets 8–16 MiB, one 8-byte
//! PTE per 4 KiB of graphics memory: entry `i` at BAR0 offset `8 MiB + 8 i` maps
//! graphics address `i * 4096`).  All vGPUs share the one *physical* GGTT,
//! reached through [`Backend::write_ggtt`].  Every guest PTE write is trapped
//! here and audited before the shadow (physical) entry is written:
//!
//! - the entry index must lie inside one of the vGPU's own slices (its aperture
//!   and its high slice, [`VgpuGm`]); anything else is dropped and counted, with
//!   a "log once per burst" flag ([`PteWrite::Dropped`]) the caller may use to
//!   rate-limit its log;
//! - a present guest PTE names a guest frame (bits 12–47, the VMM's IOVA; bits
//!   1–11 and 48–63 are kept in the guest view but ignored, as hardware does);
//!   it is translated with [`GuestMemory::pin`], and a frame outside guest memory
//!   (or a refused pin) is rejected and counted;
//! - entries that are not mapped — never written, cleared, rejected, or evicted
//!   by a `dma_unmap` — point to the vGPU's own scratch host page, never to
//!   another vGPU's or the host's memory.
//!
//! Reads of the guest view return exactly what the guest wrote (including
//! rejected values and the two 4-byte halves as combined); entries outside the
//! vGPU's slices read as 0.
//!
//! Pin bookkeeping: an entry is *mapped* exactly when it holds one pin of the
//! guest frame its guest value names.  The pin is released when the entry is
//! overwritten with another frame (after the new physical entry is written and
//! the CPU's aperture mapping of the page is invalidated), on [`Ggtt::reset`],
//! on [`Ggtt::dma_unmap`] and on [`Ggtt::destroy`].  [`Ggtt::mapped_entries`] is
//! always the number of pins held.
//!
//! Storage is borrowed: two `u64` slices with one element per entry of the two
//! slices ([`VgpuGm::entries`]), aperture entries first.  `guest` holds the guest
//! values, `shadow` the physical PTE written for a mapped entry (0 = scratch).

use super::backend::{Backend, Pte};
use super::gm_view::GmView;
pub use super::gm_view::VgpuGm;
use super::mem::{Gfn, GmRange, Gma, HostPage, MemError, PAGE_SHIFT, PAGE_SIZE};
use super::services::{CpuMappings, GuestMemory};

/// First BAR0 offset of the guest GGTT view.
pub const GGTT_BAR0_BASE: u64 = 8 << 20;
/// One past the last BAR0 offset of the guest GGTT view.
pub const GGTT_BAR0_END: u64 = 16 << 20;
/// Bytes per GGTT entry.
pub const GGTT_PTE_BYTES: u64 = 8;
/// Guest GGTT PTE: present bit.
pub const GUEST_PTE_PRESENT: u64 = 1;
/// Guest GGTT PTE: address bits 12–47 (a guest physical address / IOVA).
pub const GUEST_PTE_ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// The guest frame a guest PTE value names (meaningful when present).
pub const fn guest_pte_frame(value: u64) -> Gfn {
    (value & GUEST_PTE_ADDR_MASK) >> PAGE_SHIFT
}

/// Whether a guest PTE value has its present bit set.
pub const fn guest_pte_present(value: u64) -> bool {
    value & GUEST_PTE_PRESENT != 0
}

/// Whether BAR0 offset `offset` falls in the guest GGTT window.
pub const fn in_window(offset: u64) -> bool {
    offset >= GGTT_BAR0_BASE && offset < GGTT_BAR0_END
}

/// Why a shadow GGTT could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgttError {
    /// A slice base or size is not page aligned.
    Misaligned,
    /// The aperture and high slices overlap.
    Overlap,
    /// A slice reaches beyond the physical GGTT.
    OutsidePhysical,
    /// `guest`/`shadow` storage length differs from [`VgpuGm::entries`].
    StorageSize,
}

/// Why a guest PTE failed the audit (its entry now maps scratch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditReject {
    /// The guest frame is not guest memory (not DMA-mapped by the VMM).
    FrameNotMapped,
    /// Pinning the frame was refused (pin limit, out of memory).
    PinRefused,
}

/// What became of one trapped guest PTE write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PteWrite {
    /// Audited: the physical entry maps the host page behind the guest frame.
    Mapped,
    /// Not present: the physical entry maps the scratch page.
    Scratch,
    /// Failed the audit: the physical entry maps the scratch page.
    Rejected(AuditReject),
    /// The entry lies outside the vGPU's slices: nothing was written.  `log`
    /// is true for the first drop of a burst (drops not separated by an
    /// accepted write), so the caller logs once per burst.
    Dropped { log: bool },
}

/// A BAR0 access to the GGTT window that is not an aligned 4- or 8-byte access
/// inside the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadAccess;

/// Per-vGPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GgttStats {
    /// Accepted (in-slice) PTE writes, halves included.
    pub writes: u64,
    /// Writes that left the entry mapping a guest page.
    pub mapped: u64,
    /// Writes of non-present values.
    pub scratch: u64,
    /// Audit rejections: frame outside guest memory.
    pub reject_frame_not_mapped: u64,
    /// Audit rejections: pin refused.
    pub reject_pin_refused: u64,
    /// Writes dropped because the entry is outside the vGPU's slices.
    pub dropped_out_of_slice: u64,
    /// Reads of entries outside the vGPU's slices (answered with 0).
    pub reads_out_of_slice: u64,
    /// Misaligned / wrongly sized accesses to the window.
    pub bad_access: u64,
    /// Entries sent to scratch by `dma_unmap` notifications.
    pub dma_unmap_evictions: u64,
}

/// The small, owned part of a vGPU's shadow GGTT: everything but the two
/// storage slices.  A long-lived owner (the kernel's per-vGPU state) keeps
/// this and re-attaches the storage per call with [`Ggtt::resume`]; the
/// storage itself stays with the caller (vmalloc'ed arrays in the kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgttState {
    /// The guest-visible slices (the view; = the placement for a fresh
    /// vGPU).  Entry indices of the GGTT window, BAR2 offsets, display
    /// surfaces and the CPU-mapping callbacks are in this space.
    gm: VgpuGm,
    ap_first: u64,
    ap_len: u64,
    hi_first: u64,
    hi_len: u64,
    /// First physical entries of the host slices (the placement): where
    /// storage index `l` is written in the physical GGTT.
    host_ap_first: u64,
    host_hi_first: u64,
    scratch: HostPage,
    mapped: u64,
    in_drop_burst: bool,
    stats: GgttStats,
    /// Chunks of guest entries written since the last [`GgttState::clear_dirty`]
    /// (migration's PRE_COPY: what changed after it was sent), one bit per
    /// `1 << dirty_shift` storage entries.
    dirty: [u64; DIRTY_WORDS],
    dirty_shift: u32,
}

/// Words of the dirty-chunk bitmap: at most `64 * DIRTY_WORDS` chunks.
pub const DIRTY_WORDS: usize = 8;
/// Smallest dirty chunk: 64 entries (256 KiB of graphics memory, 512 bytes of PTEs).
pub const DIRTY_MIN_SHIFT: u32 = 6;

/// The chunk size (log2, in entries) for `n` storage entries: the smallest
/// from [`DIRTY_MIN_SHIFT`] that needs no more than `64 * DIRTY_WORDS` chunks.
const fn dirty_shift_for(n: usize) -> u32 {
    let mut s = DIRTY_MIN_SHIFT;
    while s < 63 && (n >> s) >= 64 * DIRTY_WORDS {
        s += 1;
    }
    s
}

impl GgttState {
    /// The vGPU's guest-visible slices (its view).
    pub fn slices(&self) -> VgpuGm {
        self.gm
    }
    /// Entries currently mapping a guest page = pins held.
    pub fn mapped_entries(&self) -> u64 {
        self.mapped
    }
    /// Counters.
    pub fn stats(&self) -> GgttStats {
        self.stats
    }

    /// Entries per dirty chunk.
    pub fn dirty_chunk_len(&self) -> usize {
        1usize << self.dirty_shift
    }

    /// Forget what was written: every chunk clean (its entries were sent).
    pub fn clear_dirty(&mut self) {
        self.dirty = [0; DIRTY_WORDS];
    }

    /// Every chunk dirty (nothing sent can be trusted any more).
    pub fn mark_all_dirty(&mut self) {
        self.dirty = [u64::MAX; DIRTY_WORDS];
    }

    fn mark_dirty(&mut self, l: usize) {
        let c = l >> self.dirty_shift;
        if let Some(w) = self.dirty.get_mut(c / 64) {
            *w |= 1 << (c % 64);
        }
    }

    /// The storage ranges `[first, end)` of the dirty chunks, ascending (a
    /// chunk past the last entry is not listed).
    pub fn dirty_ranges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let n = self.gm.entries();
        let shift = self.dirty_shift;
        (0..64 * DIRTY_WORDS)
            .filter(move |c| {
                self.dirty
                    .get(c / 64)
                    .is_some_and(|w| w & (1 << (c % 64)) != 0)
            })
            .map(move |c| (c << shift, ((c + 1) << shift).min(n)))
            .filter(|(a, b)| a < b)
    }

    /// How many storage entries lie in dirty chunks.
    pub fn dirty_entries(&self) -> usize {
        self.dirty_ranges().map(|(a, b)| b - a).sum()
    }
}

/// The shadow GGTT state of one vGPU.
pub struct Ggtt<'a> {
    st: GgttState,
    guest: &'a mut [u64],
    shadow: &'a mut [u64],
}

impl<'a> Ggtt<'a> {
    /// Re-attach storage to a state taken with [`Ggtt::state`] (the same
    /// slices the state was created over; only their lengths can be checked).
    pub fn resume(
        st: GgttState,
        guest: &'a mut [u64],
        shadow: &'a mut [u64],
    ) -> Result<Self, GgttError> {
        let n = st.gm.entries();
        if guest.len() != n || shadow.len() != n {
            return Err(GgttError::StorageSize);
        }
        Ok(Ggtt { st, guest, shadow })
    }

    /// The owned part, to keep between calls (see [`GgttState`]).
    pub fn state(&self) -> GgttState {
        self.st
    }

    /// Set up the shadow GGTT of a vGPU owning `gm`, whose unmapped entries
    /// point to `scratch` (a host page owned by this vGPU alone).  Clears the
    /// storage and points every physical entry of the slices at scratch.
    pub fn new(
        gm: VgpuGm,
        scratch: HostPage,
        guest: &'a mut [u64],
        shadow: &'a mut [u64],
        be: &mut impl Backend,
    ) -> Result<Self, GgttError> {
        let aligned = |r: &GmRange| r.base % PAGE_SIZE == 0 && r.size % PAGE_SIZE == 0;
        if !aligned(&gm.aperture) || !aligned(&gm.high) {
            return Err(GgttError::Misaligned);
        }
        if gm.aperture.overlaps(&gm.high) {
            return Err(GgttError::Overlap);
        }
        let limit = u64::from(be.ggtt_entries()) << PAGE_SHIFT;
        for r in [gm.aperture, gm.high] {
            if r.base.checked_add(r.size).is_none_or(|e| e > limit) {
                return Err(GgttError::OutsidePhysical);
            }
        }
        let n = gm.entries();
        if guest.len() != n || shadow.len() != n {
            return Err(GgttError::StorageSize);
        }
        let g = Ggtt {
            st: GgttState {
                gm,
                ap_first: gm.aperture.base >> PAGE_SHIFT,
                ap_len: gm.aperture.size >> PAGE_SHIFT,
                hi_first: gm.high.base >> PAGE_SHIFT,
                hi_len: gm.high.size >> PAGE_SHIFT,
                host_ap_first: gm.aperture.base >> PAGE_SHIFT,
                host_hi_first: gm.high.base >> PAGE_SHIFT,
                scratch,
                mapped: 0,
                in_drop_burst: false,
                stats: GgttStats::default(),
                dirty: [u64::MAX; DIRTY_WORDS],
                dirty_shift: dirty_shift_for(n),
            },
            guest,
            shadow,
        };
        g.guest.fill(0);
        g.shadow.fill(0);
        let pte = Pte::new(scratch);
        for l in 0..n {
            be.write_ggtt(g.physical(l) as u32, pte);
        }
        Ok(g)
    }

    /// The vGPU's guest-visible slices (its view: its placement unless
    /// [`Ggtt::set_view`] moved it).
    pub fn slices(&self) -> VgpuGm {
        self.st.gm
    }

    /// Let the guest see `view` from now on (a migration target adopting
    /// the source's GM view): entry `i` of the GGTT window, BAR2 offset
    /// `i * 4096` and every other guest-facing index now name storage entry
    /// `i - view base` of the same slice, whose physical entry stays in the
    /// placement.  Only an empty GGTT (after [`Ggtt::reset`]) can move:
    /// otherwise nothing changes and `false` is returned.
    pub fn set_view(&mut self, view: &GmView) -> bool {
        let host = view.host();
        if self.st.mapped != 0
            || self.guest.iter().any(|v| *v != 0)
            || host.aperture.base >> PAGE_SHIFT != self.st.host_ap_first
            || host.high.base >> PAGE_SHIFT != self.st.host_hi_first
            || view.view().entries() != self.st.gm.entries()
        {
            return false;
        }
        let v = view.view();
        self.st.gm = v;
        self.st.ap_first = v.aperture.base >> PAGE_SHIFT;
        self.st.hi_first = v.high.base >> PAGE_SHIFT;
        true
    }
    /// The vGPU's scratch page.
    pub fn scratch(&self) -> HostPage {
        self.st.scratch
    }
    /// Counters.
    pub fn stats(&self) -> GgttStats {
        self.st.stats
    }
    /// Entries currently mapping a guest page = pins held by this GGTT.
    pub fn mapped_entries(&self) -> u64 {
        self.st.mapped
    }

    /// Storage index of GGTT entry `index`, if it lies in the vGPU's slices.
    fn local(&self, index: u64) -> Option<usize> {
        if index >= self.st.ap_first && index - self.st.ap_first < self.st.ap_len {
            return Some((index - self.st.ap_first) as usize);
        }
        if index >= self.st.hi_first && index - self.st.hi_first < self.st.hi_len {
            return Some((self.st.ap_len + (index - self.st.hi_first)) as usize);
        }
        None
    }

    /// Guest-visible GGTT entry index of storage index `l`.
    fn global(&self, l: usize) -> u64 {
        self.entry_of(l, self.st.ap_first, self.st.hi_first)
    }

    /// Physical GGTT entry of storage index `l` (in the placement).
    fn physical(&self, l: usize) -> u64 {
        self.entry_of(l, self.st.host_ap_first, self.st.host_hi_first)
    }

    /// Entry of storage index `l` in slices starting at entries `ap_first`
    /// and `hi_first`.
    fn entry_of(&self, l: usize, ap_first: u64, hi_first: u64) -> u64 {
        let l = l as u64;
        if l < self.st.ap_len {
            ap_first + l
        } else {
            hi_first + (l - self.st.ap_len)
        }
    }

    /// The guest's value of GGTT entry `index` (0 outside the slices).
    pub fn guest_entry(&self, index: u64) -> u64 {
        self.local(index)
            .and_then(|l| self.guest.get(l).copied())
            .unwrap_or(0)
    }

    /// The guest frame the guest's GGTT maps at graphics address `gma`: only
    /// inside the vGPU's slices and only if the guest entry is present.
    pub fn guest_frame(&self, gma: Gma) -> Option<Gfn> {
        let v = self.guest_entry_checked(gma >> PAGE_SHIFT)?;
        guest_pte_present(v).then(|| guest_pte_frame(v))
    }

    fn guest_entry_checked(&self, index: u64) -> Option<u64> {
        self.local(index).and_then(|l| self.guest.get(l).copied())
    }

    /// The host page physical GGTT entry `index` maps now (the pinned guest
    /// page or scratch), or `None` outside the vGPU's slices.
    pub fn host_page(&self, index: u64) -> Option<HostPage> {
        let s = self
            .local(index)
            .and_then(|l| self.shadow.get(l).copied())?;
        Some(if s == 0 {
            self.st.scratch
        } else {
            Pte(s).page()
        })
    }

    /// Trapped BAR0 write at `offset` (inside the GGTT window): an aligned
    /// 8-byte PTE write, or a 4-byte write of its low (offset % 8 == 0) or high
    /// (offset % 8 == 4) half, combined with the other half of the guest value.
    pub fn mmio_write(
        &mut self,
        gmem: &mut impl GuestMemory,
        be: &mut impl Backend,
        cpu: &mut impl CpuMappings,
        offset: u64,
        data: &[u8],
    ) -> Result<PteWrite, BadAccess> {
        let Some((index, half)) = self.decode(offset, data.len()) else {
            self.st.stats.bad_access = self.st.stats.bad_access.wrapping_add(1);
            return Err(BadAccess);
        };
        let value = match half {
            None => match <[u8; 8]>::try_from(data) {
                Ok(b) => u64::from_le_bytes(b),
                Err(_) => return Err(BadAccess),
            },
            Some(high) => {
                let h = match <[u8; 4]>::try_from(data) {
                    Ok(b) => u64::from(u32::from_le_bytes(b)),
                    Err(_) => return Err(BadAccess),
                };
                let Some(old) = self.guest_entry_checked(index) else {
                    return Ok(self.drop_write());
                };
                if high {
                    (old & 0xffff_ffff) | (h << 32)
                } else {
                    (old & !0xffff_ffff) | h
                }
            }
        };
        Ok(self.write_pte(gmem, be, cpu, index, value))
    }

    /// Trapped BAR0 read at `offset` (inside the GGTT window): 8 bytes, or a
    /// 4-byte half, of exactly what the guest wrote; 0 outside the slices.
    pub fn mmio_read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BadAccess> {
        let Some((index, half)) = self.decode(offset, buf.len()) else {
            self.st.stats.bad_access = self.st.stats.bad_access.wrapping_add(1);
            return Err(BadAccess);
        };
        let v = match self.guest_entry_checked(index) {
            Some(v) => v,
            None => {
                self.st.stats.reads_out_of_slice = self.st.stats.reads_out_of_slice.wrapping_add(1);
                0
            }
        };
        match half {
            None => buf.copy_from_slice(&v.to_le_bytes()),
            Some(false) => buf.copy_from_slice(&(v as u32).to_le_bytes()),
            Some(true) => buf.copy_from_slice(&((v >> 32) as u32).to_le_bytes()),
        }
        Ok(())
    }

    /// Entry index and which half (None = whole entry, Some(high)).
    fn decode(&self, offset: u64, len: usize) -> Option<(u64, Option<bool>)> {
        if !in_window(offset) {
            return None;
        }
        let rel = offset - GGTT_BAR0_BASE;
        let index = rel / GGTT_PTE_BYTES;
        match (len, rel % GGTT_PTE_BYTES) {
            (8, 0) => Some((index, None)),
            (4, 0) => Some((index, Some(false))),
            (4, 4) => Some((index, Some(true))),
            _ => None,
        }
    }

    fn drop_write(&mut self) -> PteWrite {
        self.st.stats.dropped_out_of_slice = self.st.stats.dropped_out_of_slice.wrapping_add(1);
        let log = !self.st.in_drop_burst;
        self.st.in_drop_burst = true;
        PteWrite::Dropped { log }
    }

    /// A guest write of the whole 8-byte value of GGTT entry `index`: audit,
    /// translate, write the physical entry, keep the guest value.
    pub fn write_pte(
        &mut self,
        gmem: &mut impl GuestMemory,
        be: &mut impl Backend,
        cpu: &mut impl CpuMappings,
        index: u64,
        value: u64,
    ) -> PteWrite {
        let Some(l) = self.local(index) else {
            return self.drop_write();
        };
        let (Some(&old_value), Some(&old_shadow)) = (self.guest.get(l), self.shadow.get(l)) else {
            return self.drop_write();
        };
        self.st.in_drop_burst = false;
        self.st.stats.writes = self.st.stats.writes.wrapping_add(1);
        if let Some(g) = self.guest.get_mut(l) {
            *g = value;
        }
        if value != old_value {
            self.st.mark_dirty(l);
        }
        let gfn = guest_pte_frame(value);
        let present = guest_pte_present(value);
        if present && old_shadow != 0 && guest_pte_frame(old_value) == gfn {
            // Same frame, still mapped: the physical entry is already right.
            self.st.stats.mapped = self.st.stats.mapped.wrapping_add(1);
            return PteWrite::Mapped;
        }
        let (new_shadow, outcome) = if !present {
            self.st.stats.scratch = self.st.stats.scratch.wrapping_add(1);
            (0, PteWrite::Scratch)
        } else {
            match gmem.pin(gfn) {
                Ok(page) => {
                    self.st.stats.mapped = self.st.stats.mapped.wrapping_add(1);
                    (Pte::new(page).0, PteWrite::Mapped)
                }
                Err(MemError::NoResource) => {
                    self.st.stats.reject_pin_refused =
                        self.st.stats.reject_pin_refused.wrapping_add(1);
                    (0, PteWrite::Rejected(AuditReject::PinRefused))
                }
                Err(MemError::NotMapped) | Err(MemError::OutOfRange) => {
                    self.st.stats.reject_frame_not_mapped =
                        self.st.stats.reject_frame_not_mapped.wrapping_add(1);
                    (0, PteWrite::Rejected(AuditReject::FrameNotMapped))
                }
            }
        };
        if new_shadow != 0 {
            self.st.mapped = self.st.mapped.wrapping_add(1);
        }
        self.replace(gmem, be, cpu, l, new_shadow, old_value, old_shadow);
        outcome
    }

    /// Make storage entry `l` hold `new_shadow` (0 = scratch): write the
    /// physical entry, invalidate the CPU mapping if it changed inside the
    /// aperture, then release the old pin (old guest value `old_value`).
    #[allow(clippy::too_many_arguments)]
    fn replace(
        &mut self,
        gmem: &mut impl GuestMemory,
        be: &mut impl Backend,
        cpu: &mut impl CpuMappings,
        l: usize,
        new_shadow: u64,
        old_value: u64,
        old_shadow: u64,
    ) {
        let index = self.global(l);
        if new_shadow != old_shadow {
            let pte = if new_shadow == 0 {
                Pte::new(self.st.scratch)
            } else {
                Pte(new_shadow)
            };
            be.write_ggtt(self.physical(l) as u32, pte);
            if let Some(s) = self.shadow.get_mut(l) {
                *s = new_shadow;
            }
            if (l as u64) < self.st.ap_len {
                cpu.invalidate(index);
            }
            cpu.entry_changed(index);
        }
        if old_shadow != 0 {
            gmem.unpin(guest_pte_frame(old_value));
            self.st.mapped = self.st.mapped.wrapping_sub(1);
        }
    }

    /// The VMM unmapped guest physical range `[iova, iova + size)` (VFIO
    /// `dma_unmap` notification): every entry mapping a frame in that range
    /// goes to scratch and drops its pin.  Returns the number of entries
    /// evicted.  The guest values are kept (reads are unchanged).
    pub fn dma_unmap(
        &mut self,
        gmem: &mut impl GuestMemory,
        be: &mut impl Backend,
        cpu: &mut impl CpuMappings,
        iova: u64,
        size: u64,
    ) -> u64 {
        let Some((first, end)) = frame_range(iova, size) else {
            return 0;
        };
        let mut evicted = 0u64;
        for l in 0..self.shadow.len() {
            let (Some(&v), Some(&s)) = (self.guest.get(l), self.shadow.get(l)) else {
                continue;
            };
            let gfn = guest_pte_frame(v);
            if s != 0 && gfn >= first && gfn < end {
                self.replace(gmem, be, cpu, l, 0, v, s);
                evicted += 1;
            }
        }
        self.st.stats.dma_unmap_evictions = self.st.stats.dma_unmap_evictions.wrapping_add(evicted);
        evicted
    }

    /// vGPU reset: the guest view reads 0 again, every entry maps scratch,
    /// every pin is released.
    pub fn reset(
        &mut self,
        gmem: &mut impl GuestMemory,
        be: &mut impl Backend,
        cpu: &mut impl CpuMappings,
    ) {
        for l in 0..self.shadow.len() {
            let (Some(&v), Some(&s)) = (self.guest.get(l), self.shadow.get(l)) else {
                continue;
            };
            self.replace(gmem, be, cpu, l, 0, v, s);
            if let Some(g) = self.guest.get_mut(l) {
                if *g != 0 {
                    *g = 0;
                    self.st.mark_dirty(l);
                }
            }
        }
        self.st.in_drop_burst = false;
    }

    /// vGPU destroy: release every pin and leave every physical entry of the
    /// slices not present (`Pte(0)`), so nothing points at this vGPU's scratch
    /// page, which the caller frees afterwards.  Every aperture page's CPU
    /// mapping is invalidated.
    pub fn destroy(
        mut self,
        gmem: &mut impl GuestMemory,
        be: &mut impl Backend,
        cpu: &mut impl CpuMappings,
    ) {
        self.reset(gmem, be, cpu);
        for l in 0..self.shadow.len() {
            let index = self.global(l);
            be.write_ggtt(self.physical(l) as u32, Pte::default());
            if (l as u64) < self.st.ap_len {
                cpu.invalidate(index);
            }
            cpu.entry_changed(index);
        }
    }
}

/// Guest frames `[first, end)` touched by byte range `[iova, iova + size)`.
pub(super) fn frame_range(iova: u64, size: u64) -> Option<(Gfn, Gfn)> {
    if size == 0 {
        return None;
    }
    let last = iova.saturating_add(size - 1);
    Some((iova >> PAGE_SHIFT, (last >> PAGE_SHIFT).saturating_add(1)))
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::backend::Backend;
    use super::super::fakes::FakeGuestMemory;
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// The one physical GGTT all vGPUs share (gvt-sim's, as a test double).
    pub struct FakePhysGgtt {
        pub entries: Vec<Pte>,
        pub writes: u64,
    }
    impl FakePhysGgtt {
        pub fn new(n: u32) -> Self {
            Self {
                entries: vec![Pte::default(); n as usize],
                writes: 0,
            }
        }
        pub fn read(&self, i: u64) -> Pte {
            self.entries[i as usize]
        }
    }
    impl Backend for FakePhysGgtt {
        fn read_reg(&mut self, _offset: u32) -> u32 {
            0
        }
        fn write_reg(&mut self, _offset: u32, _value: u32) {}
        fn ggtt_entries(&self) -> u32 {
            self.entries.len() as u32
        }
        fn write_ggtt(&mut self, index: u32, pte: Pte) {
            self.writes += 1;
            self.entries[index as usize] = pte;
        }
        fn read_ggtt(&self, index: u32) -> Pte {
            self.entries[index as usize]
        }
    }

    /// Records every invalidated aperture page.
    #[derive(Default)]
    pub struct RecordingCpu {
        pub invalidated: Vec<u64>,
    }
    impl CpuMappings for RecordingCpu {
        fn invalidate(&mut self, aperture_page_index: u64) {
            self.invalidated.push(aperture_page_index);
        }
    }

    const SCRATCH: HostPage = HostPage(9);

    fn slices() -> VgpuGm {
        VgpuGm {
            aperture: GmRange::new(2 * PAGE_SIZE, 4 * PAGE_SIZE),
            high: GmRange::new(20 * PAGE_SIZE, 4 * PAGE_SIZE),
        }
    }

    fn off(index: u64) -> u64 {
        GGTT_BAR0_BASE + index * 8
    }

    #[test]
    fn setup_validates_slices_and_points_everything_at_scratch() {
        let mut be = FakePhysGgtt::new(32);
        be.entries.iter_mut().for_each(|p| *p = Pte(0xdead_0001));
        let (mut gs, mut ss) = (vec![5; 8], vec![5; 8]);
        {
            let g = Ggtt::new(slices(), SCRATCH, &mut gs, &mut ss, &mut be).unwrap();
            assert_eq!(g.mapped_entries(), 0);
            for i in 0..32u64 {
                let inside = (2..6).contains(&i) || (20..24).contains(&i);
                let want = if inside {
                    Pte::new(SCRATCH)
                } else {
                    Pte(0xdead_0001)
                };
                assert_eq!(be.read(i), want, "entry {i}");
            }
        }
        assert!(gs.iter().all(|&v| v == 0) && ss.iter().all(|&v| v == 0));

        let mut st = |gm: VgpuGm, n: usize| {
            let (mut a, mut b) = (vec![0; n], vec![0; n]);
            Ggtt::new(gm, SCRATCH, &mut a, &mut b, &mut be).err()
        };
        assert_eq!(st(slices(), 7), Some(GgttError::StorageSize));
        let mis = VgpuGm {
            aperture: GmRange::new(100, PAGE_SIZE),
            high: GmRange::default(),
        };
        assert_eq!(st(mis, 1), Some(GgttError::Misaligned));
        let ovl = VgpuGm {
            aperture: GmRange::new(0, 4 * PAGE_SIZE),
            high: GmRange::new(3 * PAGE_SIZE, PAGE_SIZE),
        };
        assert_eq!(st(ovl, 5), Some(GgttError::Overlap));
        let big = VgpuGm {
            aperture: GmRange::new(0, 4 * PAGE_SIZE),
            high: GmRange::new(30 * PAGE_SIZE, 4 * PAGE_SIZE),
        };
        assert_eq!(st(big, 8), Some(GgttError::OutsidePhysical));
        let wrap = VgpuGm {
            aperture: GmRange::new(!0xfff, 1 << 20),
            high: GmRange::default(),
        };
        assert_eq!(st(wrap, 256), Some(GgttError::OutsidePhysical));
    }

    #[test]
    fn audited_write_maps_translates_and_reads_back_verbatim() {
        let mut be = FakePhysGgtt::new(32);
        let mut gmem = FakeGuestMemory::new(0x100, 8, 500);
        let mut cpu = RecordingCpu::default();
        let (mut gs, mut ss) = (vec![0; 8], vec![0; 8]);
        let mut g = Ggtt::new(slices(), SCRATCH, &mut gs, &mut ss, &mut be).unwrap();

        // Guest-controlled junk bits are kept in the view but ignored.
        let v = 0xabcd_0000_0010_3ffbu64; // gfn 0x103, present, bits 1-11 and 48-63 set
        let r = g.mmio_write(&mut gmem, &mut be, &mut cpu, off(21), &v.to_le_bytes());
        assert_eq!(r, Ok(PteWrite::Mapped));
        assert_eq!(be.read(21), Pte::new(HostPage(503)));
        assert_eq!(gmem.pins_of(0x103), 1);
        let mut b = [0u8; 8];
        g.mmio_read(off(21), &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), v);
        let mut h = [0u8; 4];
        g.mmio_read(off(21) + 4, &mut h).unwrap();
        assert_eq!(u32::from_le_bytes(h), 0xabcd_0000);
        g.mmio_read(off(21), &mut h).unwrap();
        assert_eq!(u32::from_le_bytes(h), 0x0010_3ffb);

        // Frame outside guest memory: rejected, scratch, counted, read verbatim.
        let bad = (0x200u64 << 12) | 1;
        assert_eq!(
            g.write_pte(&mut gmem, &mut be, &mut cpu, 21, bad),
            PteWrite::Rejected(AuditReject::FrameNotMapped)
        );
        assert_eq!(be.read(21), Pte::new(SCRATCH));
        assert_eq!(gmem.outstanding_pins(), 0);
        assert_eq!(g.guest_entry(21), bad);
        assert_eq!(g.stats().reject_frame_not_mapped, 1);

        // Pin refused.
        gmem.pin_limit = Some(0);
        assert_eq!(
            g.write_pte(&mut gmem, &mut be, &mut cpu, 22, (0x101 << 12) | 1),
            PteWrite::Rejected(AuditReject::PinRefused)
        );
        assert_eq!(g.stats().reject_pin_refused, 1);
        gmem.pin_limit = None;

        // Not present: scratch, no pin.
        assert_eq!(
            g.write_pte(&mut gmem, &mut be, &mut cpu, 23, 0x101 << 12),
            PteWrite::Scratch
        );
        assert_eq!(be.read(23), Pte::new(SCRATCH));
        assert_eq!(g.mapped_entries(), 0);
        assert_eq!(gmem.outstanding_pins(), 0);
        g.destroy(&mut gmem, &mut be, &mut cpu);
    }

    #[test]
    fn out_of_slice_writes_are_dropped_counted_and_logged_once_per_burst() {
        let mut be = FakePhysGgtt::new(32);
        be.entries[10] = Pte(0x7777_0001);
        let mut gmem = FakeGuestMemory::new(0x100, 8, 500);
        let mut cpu = RecordingCpu::default();
        let (mut gs, mut ss) = (vec![0; 8], vec![0; 8]);
        let mut g = Ggtt::new(slices(), SCRATCH, &mut gs, &mut ss, &mut be).unwrap();
        let v = ((0x101u64 << 12) | 1).to_le_bytes();
        assert_eq!(
            g.mmio_write(&mut gmem, &mut be, &mut cpu, off(10), &v),
            Ok(PteWrite::Dropped { log: true })
        );
        assert_eq!(
            g.mmio_write(&mut gmem, &mut be, &mut cpu, off(1), &v),
            Ok(PteWrite::Dropped { log: false })
        );
        assert_eq!(
            g.mmio_write(&mut gmem, &mut be, &mut cpu, off(6) + 4, &v[..4]),
            Ok(PteWrite::Dropped { log: false })
        );
        // Beyond the physical GGTT but inside the window: dropped as well.
        assert_eq!(
            g.mmio_write(&mut gmem, &mut be, &mut cpu, GGTT_BAR0_END - 8, &v),
            Ok(PteWrite::Dropped { log: false })
        );
        assert_eq!(
            g.mmio_write(&mut gmem, &mut be, &mut cpu, off(2), &v),
            Ok(PteWrite::Mapped)
        );
        assert_eq!(
            g.mmio_write(&mut gmem, &mut be, &mut cpu, off(9), &v),
            Ok(PteWrite::Dropped { log: true })
        );
        assert_eq!(g.stats().dropped_out_of_slice, 5);
        assert_eq!(be.read(10), Pte(0x7777_0001));
        assert_eq!(be.read(1), Pte::default());
        let mut b = [0xffu8; 8];
        g.mmio_read(off(10), &mut b).unwrap();
        assert_eq!(b, [0; 8]);
        assert_eq!(g.stats().reads_out_of_slice, 1);
        assert_eq!(g.guest_entry(10), 0);
        assert_eq!(g.guest_frame(10 * PAGE_SIZE), None);
        assert_eq!(g.guest_frame(2 * PAGE_SIZE + 5), Some(0x101));
        g.destroy(&mut gmem, &mut be, &mut cpu);
        assert_eq!(gmem.outstanding_pins(), 0);
    }

    #[test]
    fn bad_accesses_are_refused() {
        let mut be = FakePhysGgtt::new(32);
        let mut gmem = FakeGuestMemory::new(0x100, 8, 500);
        let mut cpu = RecordingCpu::default();
        let (mut gs, mut ss) = (vec![0; 8], vec![0; 8]);
        let mut g = Ggtt::new(slices(), SCRATCH, &mut gs, &mut ss, &mut be).unwrap();
        for (o, len) in [
            (off(2) + 4, 8),
            (off(2) + 2, 4),
            (off(2), 2),
            (off(2), 1),
            (off(2), 16),
            (0, 8),
            (GGTT_BAR0_END, 8),
            (u64::MAX, 8),
        ] {
            let data = vec![1u8; len];
            assert_eq!(
                g.mmio_write(&mut gmem, &mut be, &mut cpu, o, &data),
                Err(BadAccess),
                "{o:#x}/{len}"
            );
            let mut buf = vec![0u8; len];
            assert_eq!(g.mmio_read(o, &mut buf), Err(BadAccess));
        }
        assert_eq!(g.stats().bad_access, 16);
        assert_eq!(gmem.outstanding_pins(), 0);
        assert!(be.entries.iter().enumerate().all(|(i, p)| {
            if g.slices().contains(i as u64 * PAGE_SIZE) {
                *p == Pte::new(SCRATCH)
            } else {
                *p == Pte::default()
            }
        }));
    }

    #[test]
    fn halves_combine_and_repin_as_the_value_changes() {
        let mut be = FakePhysGgtt::new(32);
        // Guest memory spans gfn 0x1_0000_0000.. so the frame's high address
        // bits live in the high dword.
        let base = 0x1_0000_0000u64;
        let mut gmem = FakeGuestMemory::new(base, 4, 700);
        let mut cpu = RecordingCpu::default();
        let (mut gs, mut ss) = (vec![0; 8], vec![0; 8]);
        let mut g = Ggtt::new(slices(), SCRATCH, &mut gs, &mut ss, &mut be).unwrap();
        let v = ((base + 2) << 12) | 1;
        // Low half first: gfn = low bits only, outside guest memory.
        let lo = (v as u32).to_le_bytes();
        let hi = ((v >> 32) as u32).to_le_bytes();
        assert_eq!(
            g.mmio_write(&mut gmem, &mut be, &mut cpu, off(3), &lo),
            Ok(PteWrite::Rejected(AuditReject::FrameNotMapped))
        );
        assert_eq!(
            g.mmio_write(&mut gmem, &mut be, &mut cpu, off(3) + 4, &hi),
            Ok(PteWrite::Mapped)
        );
        assert_eq!(g.guest_entry(3), v);
        assert_eq!(be.read(3), Pte::new(HostPage(702)));
        assert_eq!(gmem.pins_of(base + 2), 1);
        // Rewriting the high half with the same value keeps the one pin.
        assert_eq!(
            g.mmio_write(&mut gmem, &mut be, &mut cpu, off(3) + 4, &hi),
            Ok(PteWrite::Mapped)
        );
        assert_eq!(gmem.outstanding_pins(), 1);
        // Changing the low half moves the mapping to another frame.
        let v2 = ((base + 3) << 12) | 1;
        assert_eq!(
            g.mmio_write(
                &mut gmem,
                &mut be,
                &mut cpu,
                off(3),
                &(v2 as u32).to_le_bytes()
            ),
            Ok(PteWrite::Mapped)
        );
        assert_eq!(g.guest_entry(3), v2);
        assert_eq!(be.read(3), Pte::new(HostPage(703)));
        assert_eq!((gmem.pins_of(base + 2), gmem.pins_of(base + 3)), (0, 1));
        // Clearing the present bit through the low half.
        assert_eq!(
            g.mmio_write(&mut gmem, &mut be, &mut cpu, off(3), &0u32.to_le_bytes()),
            Ok(PteWrite::Scratch)
        );
        assert_eq!(g.guest_entry(3), (base << 12) & !0xffff_ffff);
        assert_eq!(gmem.outstanding_pins(), 0);
        g.destroy(&mut gmem, &mut be, &mut cpu);
    }

    #[test]
    fn overwrite_dma_unmap_reset_and_destroy_release_every_pin() {
        let mut be = FakePhysGgtt::new(32);
        let mut gmem = FakeGuestMemory::new(0x100, 8, 500);
        let mut cpu = RecordingCpu::default();
        let (mut gs, mut ss) = (vec![0; 8], vec![0; 8]);
        let mut g = Ggtt::new(slices(), SCRATCH, &mut gs, &mut ss, &mut be).unwrap();
        // Two entries share a frame: two pins.
        g.write_pte(&mut gmem, &mut be, &mut cpu, 2, (0x102 << 12) | 1);
        g.write_pte(&mut gmem, &mut be, &mut cpu, 20, (0x102 << 12) | 1);
        g.write_pte(&mut gmem, &mut be, &mut cpu, 21, (0x103 << 12) | 1);
        g.write_pte(&mut gmem, &mut be, &mut cpu, 22, (0x105 << 12) | 1);
        assert_eq!(gmem.pins_of(0x102), 2);
        assert_eq!(g.mapped_entries(), 4);
        // Overwrite releases.
        g.write_pte(&mut gmem, &mut be, &mut cpu, 2, (0x104 << 12) | 1);
        assert_eq!((gmem.pins_of(0x102), gmem.pins_of(0x104)), (1, 1));
        // dma_unmap of [0x102, 0x104) evicts 20 and 21, keeps guest values.
        gmem.unmap(0x102, 2);
        let (iova, size) = ((0x102u64 << 12) + 100, PAGE_SIZE + 10); // unaligned: touches 0x102..=0x103
        assert_eq!(g.dma_unmap(&mut gmem, &mut be, &mut cpu, iova, size), 2);
        assert_eq!(
            (be.read(20), be.read(21)),
            (Pte::new(SCRATCH), Pte::new(SCRATCH))
        );
        assert_eq!(g.guest_entry(20), (0x102 << 12) | 1);
        assert_eq!(g.stats().dma_unmap_evictions, 2);
        assert_eq!(gmem.outstanding_pins(), 2);
        assert_eq!(g.mapped_entries(), 2);
        // Rewriting an evicted entry with its unmapped frame is rejected.
        assert_eq!(
            g.write_pte(&mut gmem, &mut be, &mut cpu, 20, (0x102 << 12) | 1),
            PteWrite::Rejected(AuditReject::FrameNotMapped)
        );
        assert_eq!(g.dma_unmap(&mut gmem, &mut be, &mut cpu, 0, 0), 0);
        assert_eq!(
            g.dma_unmap(&mut gmem, &mut be, &mut cpu, u64::MAX - 10, 100),
            0
        );
        // Reset: zero view, everything scratch, nothing pinned.
        cpu.invalidated.clear();
        g.reset(&mut gmem, &mut be, &mut cpu);
        assert_eq!(gmem.outstanding_pins(), 0);
        assert_eq!(g.mapped_entries(), 0);
        assert_eq!(cpu.invalidated, vec![2]);
        for i in (2..6).chain(20..24) {
            assert_eq!(g.guest_entry(i), 0);
            assert_eq!(be.read(i), Pte::new(SCRATCH));
        }
        g.write_pte(&mut gmem, &mut be, &mut cpu, 23, (0x107 << 12) | 1);
        g.destroy(&mut gmem, &mut be, &mut cpu);
        assert_eq!(gmem.outstanding_pins(), 0);
        for i in 0..32 {
            assert_eq!(be.read(i), Pte::default());
        }
    }

    #[test]
    fn frame_range_rounds_outwards_and_saturates() {
        assert_eq!(frame_range(0x1000, 0x1000), Some((1, 2)));
        assert_eq!(frame_range(0x1fff, 2), Some((1, 3)));
        assert_eq!(frame_range(0, 0), None);
        assert_eq!(
            frame_range(u64::MAX, 5),
            Some((u64::MAX >> 12, (u64::MAX >> 12) + 1))
        );
    }

    // ---- isolation property: several vGPUs on one physical GGTT ----

    const PHYS: u32 = 64;
    const NV: usize = 3;
    const SENTINEL: Pte = Pte(0x5e_5e00_0001);

    fn vgpu_gm(k: usize) -> VgpuGm {
        // Aperture: entries [4k, 4k+4); high: [24 + 8k, 24 + 8k + 5).  The rest
        // (12..24, 48..64, and gaps) belongs to nobody.
        let k = k as u64;
        VgpuGm {
            aperture: GmRange::new(4 * k * PAGE_SIZE, 4 * PAGE_SIZE),
            high: GmRange::new((24 + 8 * k) * PAGE_SIZE, 5 * PAGE_SIZE),
        }
    }

    fn guest_mem(k: usize) -> FakeGuestMemory {
        // Guest k: frames [0x40 + 0x10k, +12) on host pages [1000 + 100k, ...).
        FakeGuestMemory::new(0x40 + 0x10 * k as u64, 12, 1000 + 100 * k as u64)
    }

    fn scratch(k: usize) -> HostPage {
        HostPage(10 + k as u64)
    }

    #[derive(Clone, Debug)]
    enum Op {
        Write {
            k: usize,
            index: u64,
            value: u64,
        },
        Half {
            k: usize,
            index: u64,
            high: bool,
            half: u32,
        },
        Unmap {
            k: usize,
            gfn: u64,
            n: u64,
        },
        Reset {
            k: usize,
        },
    }

    fn value() -> impl Strategy<Value = u64> {
        // Frames 0x30..0x80 cover every guest's memory, gaps and beyond; junk
        // bits are random; present most of the time.
        (0x30u64..0x80, any::<u16>(), any::<u16>(), 0u8..4).prop_map(|(gfn, lo, hi, p)| {
            (gfn << 12) | (u64::from(lo) & 0xffe) | (u64::from(hi) << 48) | u64::from(p != 0)
        })
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..NV, 0..PHYS as u64 + 4, value()).prop_map(|(k, index, value)| Op::Write { k, index, value }),
            3 => (0..NV, 0..PHYS as u64 + 4, any::<bool>(), value()).prop_map(|(k, index, high, v)| Op::Half {
                k, index, high, half: if high { (v >> 32) as u32 } else { v as u32 }
            }),
            1 => (0..NV, 0x38u64..0x78, 1u64..6).prop_map(|(k, gfn, n)| Op::Unmap { k, gfn, n }),
            1 => (0..NV).prop_map(|k| Op::Reset { k }),
        ]
    }

    fn owned_by(k: usize, i: u64) -> bool {
        vgpu_gm(k).contains(i * PAGE_SIZE)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn shadow_ggtt_isolates_vgpus(ops in proptest::collection::vec(op(), 1..120)) {
            let mut be = FakePhysGgtt::new(PHYS);
            be.entries.iter_mut().for_each(|p| *p = SENTINEL);
            let mut mems: Vec<FakeGuestMemory> = (0..NV).map(guest_mem).collect();
            let mut cpus: Vec<RecordingCpu> = (0..NV).map(|_| RecordingCpu::default()).collect();
            let mut store: Vec<(Vec<u64>, Vec<u64>)> =
                (0..NV).map(|k| (vec![0; vgpu_gm(k).entries()], vec![0; vgpu_gm(k).entries()])).collect();
            let mut ggtts: Vec<Ggtt<'_>> = store
                .iter_mut()
                .enumerate()
                .map(|(k, (a, b))| Ggtt::new(vgpu_gm(k), scratch(k), a, b, &mut be).unwrap())
                .collect();
            // Model of each guest's view.
            let mut model: Vec<Vec<u64>> = (0..NV).map(|_| vec![0u64; PHYS as usize + 4]).collect();

            for op in ops {
                match op {
                    Op::Write { k, index, value } => {
                        let r = ggtts[k].mmio_write(&mut mems[k], &mut be, &mut cpus[k], GGTT_BAR0_BASE + index * 8, &value.to_le_bytes());
                        if owned_by(k, index) {
                            model[k][index as usize] = value;
                            let dropped = matches!(r, Ok(PteWrite::Dropped { .. }));
                            prop_assert!(!dropped, "in-slice write dropped");
                        } else {
                            let dropped = matches!(r, Ok(PteWrite::Dropped { .. }));
                            prop_assert!(dropped, "out-of-slice write not dropped");
                        }
                    }
                    Op::Half { k, index, high, half } => {
                        let o = GGTT_BAR0_BASE + index * 8 + if high { 4 } else { 0 };
                        let r = ggtts[k].mmio_write(&mut mems[k], &mut be, &mut cpus[k], o, &half.to_le_bytes());
                        prop_assert!(r.is_ok());
                        if owned_by(k, index) {
                            let m = &mut model[k][index as usize];
                            *m = if high { (*m & 0xffff_ffff) | (u64::from(half) << 32) } else { (*m & !0xffff_ffff) | u64::from(half) };
                        }
                    }
                    Op::Unmap { k, gfn, n } => {
                        mems[k].unmap(gfn, n);
                        ggtts[k].dma_unmap(&mut mems[k], &mut be, &mut cpus[k], gfn << 12, n << 12);
                    }
                    Op::Reset { k } => {
                        ggtts[k].reset(&mut mems[k], &mut be, &mut cpus[k]);
                        model[k].iter_mut().for_each(|v| *v = 0);
                    }
                }
                // Invariants after every step.
                for i in 0..PHYS as u64 {
                    let pte = be.read(i);
                    let owner = (0..NV).find(|&k| owned_by(k, i));
                    match owner {
                        None => prop_assert_eq!(pte, SENTINEL, "entry {} outside all slices touched", i),
                        Some(k) => {
                            let m = &mems[k];
                            let ok = pte == Pte::new(scratch(k))
                                || (pte.present() && pte.page().0 >= m.host_base && pte.page().0 < m.host_base + m.len
                                    && m.backing(pte.page().0 - m.host_base + m.gfn_base) == Some(pte.page()));
                            prop_assert!(ok, "entry {} of vGPU {} maps {:?}", i, k, pte);
                            // Aperture coherence: the CPU fault path agrees with the engine.
                            let want = if vgpu_gm(k).aperture.contains(i * PAGE_SIZE, 0) { Ok(pte.page()) } else { Err(super::super::aperture::ApertureError::OutsideSlice) };
                            prop_assert_eq!(super::super::aperture::fault(&ggtts[k], i * PAGE_SIZE), want);
                        }
                    }
                }
                for k in 0..NV {
                    let live = (0..PHYS as u64).filter(|&i| owned_by(k, i) && be.read(i) != Pte::new(scratch(k))).count() as u64;
                    prop_assert_eq!(mems[k].outstanding_pins(), live);
                    prop_assert_eq!(ggtts[k].mapped_entries(), live);
                    for i in 0..PHYS as u64 + 4 {
                        let want = if owned_by(k, i) { model[k][i as usize] } else { 0 };
                        prop_assert_eq!(ggtts[k].guest_entry(i), want);
                        // An entry whose guest value is present and whose frame
                        // is still backed must be mapped to exactly that frame
                        // (or rejected because of a pin limit, unused here).
                        let v = ggtts[k].guest_entry(i);
                        if owned_by(k, i) && guest_pte_present(v) {
                            if let Some(p) = mems[k].backing(guest_pte_frame(v)) {
                                // Evicted entries stay on scratch until rewritten,
                                // but a backed frame is never evicted.
                                prop_assert_eq!(be.read(i), Pte::new(p));
                            }
                        }
                    }
                    // Invalidations only ever name the vGPU's own aperture pages.
                    prop_assert!(cpus[k].invalidated.iter().all(|&p| vgpu_gm(k).aperture.contains(p * PAGE_SIZE, 0)));
                }
            }
            for (k, g) in ggtts.into_iter().enumerate() {
                g.destroy(&mut mems[k], &mut be, &mut cpus[k]);
                prop_assert_eq!(mems[k].outstanding_pins(), 0);
            }
            for i in 0..PHYS as u64 {
                let inside = (0..NV).any(|k| owned_by(k, i));
                prop_assert_eq!(be.read(i), if inside { Pte::default() } else { SENTINEL });
            }
        }
    }
}
