//! Per-VM shadow local page tables: the PPGTT (paper §3.4 "Per-VM shadow local
//! page tables", Figure 9; §3.3 "Per-VM local graphics memory").
//!
//! # The gvt-sim PPGTT format
//!
//! - Each engine has a register **PP_DIR_BASE** at ring MMIO base + `0x228`
//!   ([`pp_dir_base`]; RCS `0x2228`, BCS `0x22228`; only the render engine uses
//!   a PPGTT in gvt-sim).  It holds the **GGTT (graphics) address** of a 4 KiB,
//!   4 KiB-aligned page directory (PD).  The PD thus lives in global graphics
//!   memory, reached through the guest's GGTT entry for that address, which
//!   must lie in the vGPU's own slices (paper: "the first level PDEs, located
//!   in the global page table").
//! - The PD holds 512 8-byte **PDEs**; a page table (PT) holds 512 8-byte
//!   **PTEs**.  Both: bit 0 present, bits 12–47 a page address, other bits
//!   ignored.
//! - A local address `a < 1 GiB` splits as PDE index `a[29:21]`, PTE index
//!   `a[20:12]`, offset `a[11:0]`: 512 × 512 × 4 KiB = 1 GiB.  Addresses at or
//!   above 1 GiB do not translate.
//! - In the **guest's** tables every address is a guest frame (IOVA): the PDE
//!   names the guest frame of a PT, the PTE the guest frame of a data page.  In
//!   the **shadow** tables every address is a host page: the root and the PTs
//!   are host pages the mediator allocates ([`HostPageAlloc`]), the PTEs name
//!   guest pages pinned through [`GuestMemory::pin`] — pages of that guest only.
//!   The guest never sees nor reaches the shadow pages (they are not guest
//!   frames).
//!
//! # Synchronisation: re-validation on submission
//!
//! gVirt write-protects the guest PT pages and resynchronises the shadow on the
//! write-protection fault.  A VFIO mdev has no page write-protection of guest
//! memory (that needs KVM page tracking, which an mdev driver cannot rely on),
//! so gvt-rs re-validates instead: before the engine next uses the address space
//! (each submission to the render engine) the mediator calls [`Ppgtt::sync`],
//! which re-reads the guest PD and every tracked guest PT, compares each entry
//! with a snapshot of what was last shadowed, and re-shadows exactly the entries
//! that changed (a PDE that changed frame drops its whole shadow PT).  The price
//! is reading the tracked tables on each submission (at most `N` × 4 KiB); the
//! gain is that no guest write is ever missed.  Between two syncs the engine may
//! still use translations the guest has since changed, but those only ever name
//! pages of that guest that are still pinned — isolation holds at all times,
//! and the guest's own consistency is restored at its next submission, which is
//! when hardware would also be expected to see it.
//!
//! One shadow root per vGPU; [`Ppgtt::shadow_root`] is the page the render
//! context switch loads.  Capacity is fixed (`N` shadow page tables, const
//! generic); a guest needing more gets [`PpgttError::Capacity`] and its
//! submission must be refused.
//!
//! # Shadow page tables are cached by guest table, and re-shadowing is charged
//!
//! A shadow PT belongs to the *guest page table* it shadows (its frame), not
//! to a directory: when PP_DIR_BASE changes (or a PDE moves to another
//! table), the shadow PTs are only unhooked from the root and kept, pins and
//! snapshot included, as a cache.  A directory that names a table already
//! shadowed re-uses it: it is hooked back and re-validated like any tracked
//! table (512 reads, no pin work unless entries changed).  So a guest that
//! alternates PP_DIR_BASE between directories whose tables fit the `N`
//! shadow tables (the thrash of review finding 5) costs reads only, never
//! thousands of unpin + pin per submission.  Cached tables are evicted (least
//! recently used first, pins released) only when a sync needs a free shadow
//! table; they are reachable by no engine, hold only pins of this guest's
//! own pages, are dropped by `dma_unmap` like hooked ones, and count in
//! [`Ppgtt::pinned_pages`] (at most `N * 512` pins, as before).
//!
//! What a sync still costs is bounded by the capacity (at most `N + 1`
//! tables read, `N * 512` pins and as many unpins) and reported:
//! [`Ppgtt::last_sync`] is the work of the last [`Ppgtt::sync`] and
//! [`SyncWork::cost_ns`] prices it ([`SYNC_READ_NS`], [`SYNC_PIN_NS`],
//! [`SYNC_UNPIN_NS`]); the mediator charges that to the guest's render
//! engine time ([`super::gpu::Gpu::charge_ppgtt`]), so a guest that makes the
//! mediator re-shadow pays for it out of its own share.

use super::backend::{EngineId, Pte};
use super::engine::AddressSpace;
use super::ggtt::{frame_range, Ggtt};
use super::mem::{Gfn, Gma, HostPage, MemError, PAGE_SHIFT, PAGE_SIZE};
use super::services::{GuestMemory, HostMemory, HostPageAlloc};

/// Offset of PP_DIR_BASE from an engine's ring MMIO base.
pub const PP_DIR_BASE_OFFSET: u32 = super::regs::ring::PP_DIR_BASE;
/// Entries per PD / PT.
pub const ENTRIES: usize = 512;
/// Size of one local graphics address space.
pub const PPGTT_SIZE: u64 = 1 << 30;
/// PDE/PTE present bit.
pub const ENTRY_PRESENT: u64 = 1;
/// PDE/PTE address bits 12–47.
pub const ENTRY_ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Modelled cost of reading one guest or shadow table entry during a sync.
pub const SYNC_READ_NS: u64 = 2;
/// Modelled cost of pinning one guest page (`vfio_pin_pages` of one page).
pub const SYNC_PIN_NS: u64 = 1000;
/// Modelled cost of unpinning one guest page.
pub const SYNC_UNPIN_NS: u64 = 500;

/// The work of one [`Ppgtt::sync`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncWork {
    /// Guest table entries read (PDEs and PTEs).
    pub reads: u64,
    /// Guest pages pinned (page tables and data pages).
    pub pins: u64,
    /// Guest pages unpinned.
    pub unpins: u64,
}

impl SyncWork {
    /// Modelled cost in ns (charged to the guest's render engine time).
    pub const fn cost_ns(&self) -> u64 {
        self.reads
            .saturating_mul(SYNC_READ_NS)
            .saturating_add(self.pins.saturating_mul(SYNC_PIN_NS))
            .saturating_add(self.unpins.saturating_mul(SYNC_UNPIN_NS))
    }
}

/// Snapshot flag: this PTE holds a pin (bit 1 is ignored by the format, so
/// it is free in a normalised entry).
const PINNED: u64 = 2;
const NO_SLOT: u16 = u16::MAX;
/// `Slot::pde` of a cached shadow PT (not hooked into the root).
const NO_PDE: u16 = u16::MAX;
/// Entries read per chunk (a 512-byte stack buffer).
const CHUNK: usize = 64;
static ZERO_PAGE: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];

/// MMIO offset of `engine`'s PP_DIR_BASE register.
pub const fn pp_dir_base(engine: EngineId) -> u32 {
    engine.mmio_base() + PP_DIR_BASE_OFFSET
}

/// PDE index of local address `addr` (< 1 GiB).
pub const fn pde_index(addr: u64) -> usize {
    ((addr >> 21) & 0x1ff) as usize
}

/// PTE index of local address `addr`.
pub const fn pte_index(addr: u64) -> usize {
    ((addr >> 12) & 0x1ff) as usize
}

/// The page an entry names (meaningful when present).
const fn entry_frame(e: u64) -> u64 {
    (e & ENTRY_ADDR_MASK) >> PAGE_SHIFT
}

fn read_entry(host: &impl HostMemory, page: HostPage, index: usize) -> Option<u64> {
    let mut b = [0u8; 8];
    host.read(page, index.checked_mul(8)?, &mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// Translate local address `addr` through the shadow tables rooted at `root`:
/// the host page the engine reaches, or `None` (not present, or beyond 1 GiB).
pub fn walk(host: &impl HostMemory, root: HostPage, addr: u64) -> Option<HostPage> {
    if addr >= PPGTT_SIZE {
        return None;
    }
    let pde = read_entry(host, root, pde_index(addr))?;
    if pde & ENTRY_PRESENT == 0 {
        return None;
    }
    let pte = read_entry(host, HostPage(entry_frame(pde)), pte_index(addr))?;
    (pte & ENTRY_PRESENT != 0).then(|| HostPage(entry_frame(pte)))
}

/// The shadow tables rooted at a page, as the render engine walks them
/// (what [`super::sim::GvtSim::run`] is given for the context it runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowRoot(pub HostPage);

impl AddressSpace for ShadowRoot {
    fn translate<H: HostMemory>(&self, host: &H, addr: u64) -> Option<(HostPage, usize)> {
        walk(host, self.0, addr).map(|p| (p, (addr & (PAGE_SIZE - 1)) as usize))
    }
}

/// Why a shadow PPGTT could not be (fully) synchronised.  The shadow stays
/// safe (it maps only pinned pages of this guest) but may be incomplete: the
/// submission that asked for the sync must be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PpgttError {
    /// `N` or the snapshot storage length is wrong (`N` in 1..=512,
    /// storage `N * 512`).
    BadStorage,
    /// PP_DIR_BASE is not 4 KiB aligned.
    PdMisaligned,
    /// PP_DIR_BASE is outside the vGPU's slices or its guest GGTT entry is
    /// not present.
    PdNotMapped,
    /// The guest frame holding the PD could not be pinned.
    PdFrame(MemError),
    /// The guest uses more page tables than the `N` shadow tables available.
    Capacity,
    /// No host page for a shadow table.
    NoHostPage,
    /// Host memory refused an access to a shadow table.
    Host(MemError),
}

/// Per-vGPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PpgttStats {
    /// Calls to `sync`.
    pub syncs: u64,
    /// Shadow PTs created.
    pub pts_shadowed: u64,
    /// Shadow PTs dropped (PDE changed, PP_DIR_BASE changed, reset).
    pub pts_released: u64,
    /// Shadow PTEs rewritten because the guest entry changed.
    pub pte_updates: u64,
    /// PTEs rejected: frame outside guest memory.
    pub reject_frame_not_mapped: u64,
    /// PTEs rejected: pin refused.
    pub reject_pin_refused: u64,
    /// PDEs naming a PT frame that could not be pinned (left not present).
    pub reject_pt_frame: u64,
    /// Syncs that ran out of shadow PTs.
    pub capacity_exceeded: u64,
    /// Shadow PTEs dropped by `dma_unmap`.
    pub dma_unmap_evictions: u64,
    /// Cached shadow PTs hooked back into the root (no re-shadowing).
    pub pts_reused: u64,
    /// Cached shadow PTs evicted to make room (their pins released).
    pub pts_evicted: u64,
    /// PP_DIR_BASE changes seen by `sync`.
    pub pd_switches: u64,
    /// Guest pages pinned and unpinned by syncs, all time.
    pub pins: u64,
    pub unpins: u64,
    /// Modelled cost of every sync ([`SyncWork::cost_ns`]), all time.
    pub sync_ns: u64,
}

impl PpgttStats {
    /// All zero (a `const` `Default`).
    pub const EMPTY: PpgttStats = PpgttStats {
        syncs: 0,
        pts_shadowed: 0,
        pts_released: 0,
        pte_updates: 0,
        reject_frame_not_mapped: 0,
        reject_pin_refused: 0,
        reject_pt_frame: 0,
        capacity_exceeded: 0,
        dma_unmap_evictions: 0,
        pts_reused: 0,
        pts_evicted: 0,
        pd_switches: 0,
        pins: 0,
        unpins: 0,
        sync_ns: 0,
    };
}

#[derive(Clone, Copy)]
struct Slot {
    used: bool,
    /// The PDE whose shadow entry points here, or [`NO_PDE`]: cached.
    pde: u16,
    guest_pt: Gfn,
    shadow: HostPage,
    /// Sync count when last hooked or validated (LRU eviction).
    last_use: u64,
}

impl Slot {
    const EMPTY: Slot = Slot {
        used: false,
        pde: 0,
        guest_pt: 0,
        shadow: HostPage(0),
        last_use: 0,
    };
}

/// The owned part of a vGPU's shadow PPGTT (everything but the snapshot
/// storage): kept by a long-lived owner between calls and re-attached with
/// [`Ppgtt::resume`].  About `N * 24 + 1100` bytes.
#[derive(Clone, Copy)]
pub struct PpgttState<const N: usize> {
    slots: [Slot; N],
    pde_slot: [u16; ENTRIES],
    root: Option<HostPage>,
    pd_gma: Option<Gma>,
    pinned: u64,
    stats: PpgttStats,
    /// Work of the sync in progress / the last one.
    work: SyncWork,
}

impl<const N: usize> PpgttState<N> {
    /// An empty shadow (no root).
    pub const fn new() -> Self {
        PpgttState {
            slots: [Slot::EMPTY; N],
            pde_slot: [NO_SLOT; ENTRIES],
            root: None,
            pd_gma: None,
            pinned: 0,
            stats: PpgttStats::EMPTY,
            work: SyncWork {
                reads: 0,
                pins: 0,
                unpins: 0,
            },
        }
    }
    /// The work of the last [`Ppgtt::sync`].
    pub fn last_sync(&self) -> SyncWork {
        self.work
    }
    /// The shadow root (see [`Ppgtt::shadow_root`]).
    pub fn shadow_root(&self) -> Option<HostPage> {
        self.root
    }
    /// Guest pages pinned by the shadow PTEs.
    pub fn pinned_pages(&self) -> u64 {
        self.pinned
    }
    /// Host pages of shadow tables held now (allocated when a sync needs
    /// them): the used page tables and the root.
    pub fn host_pages(&self) -> usize {
        self.slots.iter().filter(|s| s.used).count() + usize::from(self.root.is_some())
    }
    /// Counters.
    pub fn stats(&self) -> PpgttStats {
        self.stats
    }
}

/// The shadow PPGTT of one vGPU, with at most `N` shadow page tables.
///
/// `snap` (borrowed, `N * 512` elements) holds, per shadow PT slot and PTE,
/// the normalised guest entry last shadowed (present bit and address) plus a
/// pinned flag.
pub struct Ppgtt<'a, const N: usize> {
    snap: &'a mut [u64],
    st: PpgttState<N>,
}

impl<'a, const N: usize> Ppgtt<'a, N> {
    /// An empty shadow PPGTT (no root until the first `sync`).
    pub fn new(snap: &'a mut [u64]) -> Result<Self, PpgttError> {
        if N == 0 || N > ENTRIES || snap.len() != N * ENTRIES {
            return Err(PpgttError::BadStorage);
        }
        snap.fill(0);
        Ok(Ppgtt {
            snap,
            st: PpgttState::new(),
        })
    }

    /// Re-attach the snapshot storage to a state taken with
    /// [`Ppgtt::state`] (the same storage it was created over).
    pub fn resume(st: PpgttState<N>, snap: &'a mut [u64]) -> Result<Self, PpgttError> {
        if N == 0 || N > ENTRIES || snap.len() != N * ENTRIES {
            return Err(PpgttError::BadStorage);
        }
        Ok(Ppgtt { snap, st })
    }

    /// The owned part, to keep between calls (see [`PpgttState`]).
    pub fn state(&self) -> PpgttState<N> {
        self.st
    }

    /// The shadow PD the render context switch loads (None before the first
    /// successful sync and after reset).
    pub fn shadow_root(&self) -> Option<HostPage> {
        self.st.root
    }
    /// Guest pages pinned by the shadow PTEs.
    pub fn pinned_pages(&self) -> u64 {
        self.st.pinned
    }
    /// Shadow page tables in use (hooked into the root or cached).
    pub fn shadow_tables(&self) -> usize {
        self.st.slots.iter().filter(|s| s.used).count()
    }
    /// Shadow page tables cached (not hooked into the root).
    pub fn cached_tables(&self) -> usize {
        self.st
            .slots
            .iter()
            .filter(|s| s.used && s.pde == NO_PDE)
            .count()
    }
    /// The work of the last [`Ppgtt::sync`] (charge [`SyncWork::cost_ns`]).
    pub fn last_sync(&self) -> SyncWork {
        self.st.work
    }
    /// Guest pages pinned by cached (unhooked) shadow tables.
    pub fn cached_pinned(&self) -> u64 {
        let mut n = 0u64;
        for (s, sl) in self.st.slots.iter().enumerate() {
            if sl.used && sl.pde == NO_PDE {
                let snap = self.snap.get(s * ENTRIES..(s + 1) * ENTRIES).unwrap_or(&[]);
                n += snap.iter().filter(|e| **e & PINNED != 0).count() as u64;
            }
        }
        n
    }

    /// The least recently used cached shadow table, if any.
    fn lru_cached(&self) -> Option<usize> {
        (0..N)
            .filter(|&k| {
                self.st
                    .slots
                    .get(k)
                    .is_some_and(|sl| sl.used && sl.pde == NO_PDE)
            })
            .min_by_key(|&k| self.st.slots.get(k).map_or(0, |sl| sl.last_use))
    }

    /// Evict cached table `s` (its pins released, its page freed).
    fn evict(&mut self, s: usize, gmem: &mut impl GuestMemory, alloc: &mut impl HostPageAlloc) {
        self.drop_slot(s, gmem, alloc);
        self.st.stats.pts_evicted = self.st.stats.pts_evicted.wrapping_add(1);
    }
    /// Counters.
    pub fn stats(&self) -> PpgttStats {
        self.st.stats
    }

    /// Bring the shadow in line with the guest tables rooted at graphics
    /// address `pd_gma` (the guest's PP_DIR_BASE) before a submission; returns
    /// the shadow root to load.
    pub fn sync(
        &mut self,
        pd_gma: Gma,
        ggtt: &Ggtt<'_>,
        gmem: &mut impl GuestMemory,
        host: &mut impl HostMemory,
        alloc: &mut impl HostPageAlloc,
    ) -> Result<HostPage, PpgttError> {
        self.st.stats.syncs = self.st.stats.syncs.wrapping_add(1);
        self.st.work = SyncWork::default();
        let r = self.sync_inner(pd_gma, ggtt, gmem, host, alloc);
        if r == Err(PpgttError::Capacity) {
            self.st.stats.capacity_exceeded = self.st.stats.capacity_exceeded.wrapping_add(1);
        }
        let w = self.st.work;
        let st = &mut self.st.stats;
        st.pins = st.pins.wrapping_add(w.pins);
        st.unpins = st.unpins.wrapping_add(w.unpins);
        st.sync_ns = st.sync_ns.wrapping_add(w.cost_ns());
        r
    }

    fn sync_inner(
        &mut self,
        pd_gma: Gma,
        ggtt: &Ggtt<'_>,
        gmem: &mut impl GuestMemory,
        host: &mut impl HostMemory,
        alloc: &mut impl HostPageAlloc,
    ) -> Result<HostPage, PpgttError> {
        if pd_gma % PAGE_SIZE != 0 {
            return Err(PpgttError::PdMisaligned);
        }
        let pd_gfn = ggtt.guest_frame(pd_gma).ok_or(PpgttError::PdNotMapped)?;
        if self.st.root.is_some() && self.st.pd_gma != Some(pd_gma) {
            self.st.stats.pd_switches = self.st.stats.pd_switches.wrapping_add(1);
            self.detach_all(host, gmem, alloc);
        }
        let root = match self.st.root {
            Some(r) => r,
            None => {
                let r = new_page(host, alloc)?;
                self.st.root = Some(r);
                r
            }
        };
        self.st.pd_gma = Some(pd_gma);
        let pd_page = self.pin(gmem, pd_gfn).map_err(PpgttError::PdFrame)?;
        let r = self.sync_pd(root, pd_page, gmem, host, alloc);
        self.unpin(gmem, pd_gfn);
        r.map(|()| root)
    }

    fn pin(&mut self, gmem: &mut impl GuestMemory, gfn: Gfn) -> Result<HostPage, MemError> {
        self.st.work.pins = self.st.work.pins.wrapping_add(1);
        gmem.pin(gfn)
    }

    fn unpin(&mut self, gmem: &mut impl GuestMemory, gfn: Gfn) {
        self.st.work.unpins = self.st.work.unpins.wrapping_add(1);
        gmem.unpin(gfn);
    }

    /// A new directory: unhook every shadow PT from the root (they stay
    /// cached for re-use).  Should the root refuse the write, the whole
    /// shadow is dropped instead (nothing stale stays reachable).
    fn detach_all(
        &mut self,
        host: &mut impl HostMemory,
        gmem: &mut impl GuestMemory,
        alloc: &mut impl HostPageAlloc,
    ) {
        let Some(root) = self.st.root else { return };
        if host.write(root, 0, &ZERO_PAGE).is_err() {
            self.release_all(gmem, alloc);
            return;
        }
        for sl in self.st.slots.iter_mut() {
            sl.pde = NO_PDE;
        }
        self.st.pde_slot = [NO_SLOT; ENTRIES];
    }

    /// Unhook the shadow PT of PDE `i` from the root and keep it cached.
    fn detach(
        &mut self,
        root: HostPage,
        i: usize,
        host: &mut impl HostMemory,
    ) -> Result<(), PpgttError> {
        let Some(s) = self.slot_of(i) else {
            return Ok(());
        };
        host.write(root, i * 8, &0u64.to_le_bytes())
            .map_err(PpgttError::Host)?;
        if let Some(sl) = self.st.slots.get_mut(s) {
            sl.pde = NO_PDE;
        }
        if let Some(ps) = self.st.pde_slot.get_mut(i) {
            *ps = NO_SLOT;
        }
        Ok(())
    }

    fn sync_pd(
        &mut self,
        root: HostPage,
        pd_page: HostPage,
        gmem: &mut impl GuestMemory,
        host: &mut impl HostMemory,
        alloc: &mut impl HostPageAlloc,
    ) -> Result<(), PpgttError> {
        let mut buf = [0u8; CHUNK * 8];
        for c in 0..ENTRIES / CHUNK {
            host.read(pd_page, c * CHUNK * 8, &mut buf)
                .map_err(PpgttError::Host)?;
            self.st.work.reads = self.st.work.reads.wrapping_add(CHUNK as u64);
            for (k, b) in buf.chunks_exact(8).enumerate() {
                let mut e = [0u8; 8];
                e.copy_from_slice(b);
                let pde = u64::from_le_bytes(e);
                self.sync_pde(root, c * CHUNK + k, pde, gmem, host, alloc)?;
            }
        }
        Ok(())
    }

    fn slot_of(&self, pde: usize) -> Option<usize> {
        let s = *self.st.pde_slot.get(pde)?;
        (s != NO_SLOT).then_some(usize::from(s))
    }

    #[allow(clippy::too_many_arguments)]
    fn sync_pde(
        &mut self,
        root: HostPage,
        i: usize,
        pde: u64,
        gmem: &mut impl GuestMemory,
        host: &mut impl HostMemory,
        alloc: &mut impl HostPageAlloc,
    ) -> Result<(), PpgttError> {
        let present = pde & ENTRY_PRESENT != 0;
        let gpt = entry_frame(pde);
        let cur = self.slot_of(i);
        if let Some(s) = cur {
            let same = self.st.slots.get(s).is_some_and(|sl| sl.guest_pt == gpt);
            if !present || !same {
                // Another table (or none): keep this one cached.
                self.detach(root, i, host)?;
            }
        }
        if !present {
            return Ok(());
        }
        let pt_page = match self.pin(gmem, gpt) {
            Ok(p) => p,
            Err(_) => {
                // A PDE naming a frame that is not (or no longer) guest
                // memory: the shadow PDE becomes not present.
                self.st.stats.reject_pt_frame = self.st.stats.reject_pt_frame.wrapping_add(1);
                if let Some(s) = self.slot_of(i) {
                    self.release_slot(root, s, gmem, host, alloc)?;
                }
                return Ok(());
            }
        };
        let r = self.sync_pde_pinned(root, i, gpt, pt_page, gmem, host, alloc);
        self.unpin(gmem, gpt);
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn sync_pde_pinned(
        &mut self,
        root: HostPage,
        i: usize,
        gpt: Gfn,
        pt_page: HostPage,
        gmem: &mut impl GuestMemory,
        host: &mut impl HostMemory,
        alloc: &mut impl HostPageAlloc,
    ) -> Result<(), PpgttError> {
        let now = self.st.stats.syncs;
        let cached = self
            .st
            .slots
            .iter()
            .position(|sl| sl.used && sl.pde == NO_PDE && sl.guest_pt == gpt);
        let s = match (self.slot_of(i), cached) {
            (Some(s), _) => s,
            (None, Some(s)) => {
                // This guest table is shadowed already: hook it back, then
                // re-validate it below like any tracked table.
                let shadow = self.st.slots.get(s).map_or(HostPage(0), |sl| sl.shadow);
                host.write(root, i * 8, &Pte::new(shadow).0.to_le_bytes())
                    .map_err(PpgttError::Host)?;
                if let (Some(sl), Some(ps)) =
                    (self.st.slots.get_mut(s), self.st.pde_slot.get_mut(i))
                {
                    sl.pde = i as u16;
                    *ps = s as u16;
                }
                self.st.stats.pts_reused = self.st.stats.pts_reused.wrapping_add(1);
                s
            }
            (None, None) => {
                let s = match self.st.slots.iter().position(|s| !s.used) {
                    Some(s) => s,
                    None => {
                        // Evict the least recently used cached table.
                        let lru = self.lru_cached().ok_or(PpgttError::Capacity)?;
                        self.evict(lru, gmem, alloc);
                        lru
                    }
                };
                let shadow = match new_page(host, alloc) {
                    Ok(p) => p,
                    Err(PpgttError::NoHostPage) => {
                        // Out of host pages: a cached table gives its up.
                        let lru = self.lru_cached().ok_or(PpgttError::NoHostPage)?;
                        self.evict(lru, gmem, alloc);
                        new_page(host, alloc)?
                    }
                    Err(e) => return Err(e),
                };
                if let Err(e) = host.write(root, i * 8, &Pte::new(shadow).0.to_le_bytes()) {
                    alloc.free(shadow);
                    return Err(PpgttError::Host(e));
                }
                if let (Some(sl), Some(ps)) =
                    (self.st.slots.get_mut(s), self.st.pde_slot.get_mut(i))
                {
                    *sl = Slot {
                        used: true,
                        pde: i as u16,
                        guest_pt: gpt,
                        shadow,
                        last_use: now,
                    };
                    *ps = s as u16;
                }
                if let Some(sn) = self.snap.get_mut(s * ENTRIES..(s + 1) * ENTRIES) {
                    sn.fill(0);
                }
                self.st.stats.pts_shadowed = self.st.stats.pts_shadowed.wrapping_add(1);
                s
            }
        };
        if let Some(sl) = self.st.slots.get_mut(s) {
            sl.last_use = now;
        }
        self.sync_pt(s, pt_page, gmem, host)
    }

    /// Re-validate shadow PT slot `s` against the guest PT in `pt_page`.
    fn sync_pt(
        &mut self,
        s: usize,
        pt_page: HostPage,
        gmem: &mut impl GuestMemory,
        host: &mut impl HostMemory,
    ) -> Result<(), PpgttError> {
        let Some(shadow) = self.st.slots.get(s).map(|sl| sl.shadow) else {
            return Ok(());
        };
        let mut buf = [0u8; CHUNK * 8];
        for c in 0..ENTRIES / CHUNK {
            host.read(pt_page, c * CHUNK * 8, &mut buf)
                .map_err(PpgttError::Host)?;
            self.st.work.reads = self.st.work.reads.wrapping_add(CHUNK as u64);
            for (k, b) in buf.chunks_exact(8).enumerate() {
                let j = c * CHUNK + k;
                let mut e = [0u8; 8];
                e.copy_from_slice(b);
                let nv = u64::from_le_bytes(e) & (ENTRY_ADDR_MASK | ENTRY_PRESENT);
                let Some(&old) = self.snap.get(s * ENTRIES + j) else {
                    continue;
                };
                let old_pinned = old & PINNED != 0;
                if old & !PINNED == nv && (old_pinned || nv & ENTRY_PRESENT == 0) {
                    continue;
                }
                // Changed (or present but not pinned yet: retry).
                let (new_pte, new_snap) = if nv & ENTRY_PRESENT == 0 {
                    (0, nv)
                } else {
                    match self.pin(gmem, entry_frame(nv)) {
                        Ok(p) => (Pte::new(p).0, nv | PINNED),
                        Err(MemError::NoResource) => {
                            self.st.stats.reject_pin_refused =
                                self.st.stats.reject_pin_refused.wrapping_add(1);
                            (0, nv)
                        }
                        Err(_) => {
                            self.st.stats.reject_frame_not_mapped =
                                self.st.stats.reject_frame_not_mapped.wrapping_add(1);
                            (0, nv)
                        }
                    }
                };
                if new_pte != 0 || old_pinned {
                    if let Err(e) = host.write(shadow, j * 8, &new_pte.to_le_bytes()) {
                        if new_pte != 0 {
                            self.unpin(gmem, entry_frame(nv));
                        }
                        return Err(PpgttError::Host(e));
                    }
                    self.st.stats.pte_updates = self.st.stats.pte_updates.wrapping_add(1);
                }
                if new_pte != 0 {
                    self.st.pinned = self.st.pinned.wrapping_add(1);
                }
                if old_pinned {
                    self.unpin(gmem, entry_frame(old));
                    self.st.pinned = self.st.pinned.wrapping_sub(1);
                }
                if let Some(sn) = self.snap.get_mut(s * ENTRIES + j) {
                    *sn = new_snap;
                }
            }
        }
        Ok(())
    }

    /// Drop shadow PT slot `s`: unhook it from the root first (so the engine
    /// can no longer reach it), then release its pins and its page.
    fn release_slot(
        &mut self,
        root: HostPage,
        s: usize,
        gmem: &mut impl GuestMemory,
        host: &mut impl HostMemory,
        alloc: &mut impl HostPageAlloc,
    ) -> Result<(), PpgttError> {
        let Some(sl) = self.st.slots.get(s).copied() else {
            return Ok(());
        };
        host.write(root, usize::from(sl.pde) * 8, &0u64.to_le_bytes())
            .map_err(PpgttError::Host)?;
        self.drop_slot(s, gmem, alloc);
        Ok(())
    }

    /// Release slot `s` once nothing the engine uses can reach it.
    fn drop_slot(&mut self, s: usize, gmem: &mut impl GuestMemory, alloc: &mut impl HostPageAlloc) {
        let Some(sl) = self.st.slots.get(s).copied() else {
            return;
        };
        if !sl.used {
            return;
        }
        let mut unpins = 0u64;
        if let Some(sn) = self.snap.get_mut(s * ENTRIES..(s + 1) * ENTRIES) {
            for e in sn.iter_mut() {
                if *e & PINNED != 0 {
                    gmem.unpin(entry_frame(*e));
                    unpins += 1;
                }
                *e = 0;
            }
        }
        self.st.pinned = self.st.pinned.wrapping_sub(unpins);
        self.st.work.unpins = self.st.work.unpins.wrapping_add(unpins);
        alloc.free(sl.shadow);
        if let Some(ps) = self.st.pde_slot.get_mut(usize::from(sl.pde)) {
            *ps = NO_SLOT;
        }
        if let Some(x) = self.st.slots.get_mut(s) {
            *x = Slot::EMPTY;
        }
        self.st.stats.pts_released = self.st.stats.pts_released.wrapping_add(1);
    }

    /// Free the root first (nothing is reachable afterwards), then every
    /// shadow PT with its pins.  Infallible: no host access needed.
    fn release_all(&mut self, gmem: &mut impl GuestMemory, alloc: &mut impl HostPageAlloc) {
        if let Some(r) = self.st.root.take() {
            alloc.free(r);
        }
        for s in 0..N {
            self.drop_slot(s, gmem, alloc);
        }
        self.st.pd_gma = None;
    }

    /// The VMM unmapped guest range `[iova, iova + size)`: every shadow PTE
    /// naming a frame in it becomes not present and drops its pin (the next
    /// sync retries the pin, which fails while the range stays unmapped).
    /// Returns the number of shadow PTEs evicted.  Should a shadow table
    /// refuse the write, the whole shadow is dropped instead, so no pin of
    /// the range survives either way.
    pub fn dma_unmap(
        &mut self,
        gmem: &mut impl GuestMemory,
        host: &mut impl HostMemory,
        alloc: &mut impl HostPageAlloc,
        iova: u64,
        size: u64,
    ) -> u64 {
        let Some((first, end)) = frame_range(iova, size) else {
            return 0;
        };
        let mut evicted = 0u64;
        for s in 0..N {
            let Some(sl) = self.st.slots.get(s).copied() else {
                continue;
            };
            if !sl.used {
                continue;
            }
            for j in 0..ENTRIES {
                let Some(&e) = self.snap.get(s * ENTRIES + j) else {
                    continue;
                };
                let f = entry_frame(e);
                if e & PINNED == 0 || f < first || f >= end {
                    continue;
                }
                if host.write(sl.shadow, j * 8, &0u64.to_le_bytes()).is_err() {
                    let n = self.st.pinned;
                    self.release_all(gmem, alloc);
                    self.st.stats.dma_unmap_evictions =
                        self.st.stats.dma_unmap_evictions.wrapping_add(n);
                    return evicted.wrapping_add(n);
                }
                gmem.unpin(f);
                self.st.pinned = self.st.pinned.wrapping_sub(1);
                if let Some(sn) = self.snap.get_mut(s * ENTRIES + j) {
                    *sn = e & !PINNED;
                }
                evicted += 1;
            }
        }
        self.st.stats.dma_unmap_evictions = self.st.stats.dma_unmap_evictions.wrapping_add(evicted);
        evicted
    }

    /// vGPU reset: drop the whole shadow (root included) and every pin.  The
    /// engine must not be using the root (the vGPU is not scheduled).
    pub fn reset(&mut self, gmem: &mut impl GuestMemory, alloc: &mut impl HostPageAlloc) {
        self.release_all(gmem, alloc);
    }

    /// vGPU destroy: as reset; every page and pin is returned.
    pub fn destroy(mut self, gmem: &mut impl GuestMemory, alloc: &mut impl HostPageAlloc) {
        self.release_all(gmem, alloc);
    }
}

/// A zeroed page from `alloc`.
fn new_page(
    host: &mut impl HostMemory,
    alloc: &mut impl HostPageAlloc,
) -> Result<HostPage, PpgttError> {
    let p = alloc.alloc().ok_or(PpgttError::NoHostPage)?;
    if let Err(e) = host.write(p, 0, &ZERO_PAGE) {
        alloc.free(p);
        return Err(PpgttError::Host(e));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::super::fakes::{FakeGuestMemory, FakeHostMemory};
    use super::super::ggtt::tests::{FakePhysGgtt, RecordingCpu};
    use super::super::ggtt::{Ggtt, VgpuGm};
    use super::super::mem::GmRange;
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec;
    use std::vec::Vec;

    /// Hands out pages of `[base, base + n)`; checks every free.
    pub struct FakeAlloc {
        free: Vec<HostPage>,
        pub live: BTreeSet<HostPage>,
    }
    impl FakeAlloc {
        pub fn new(base: u64, n: u64) -> Self {
            Self {
                free: (base..base + n).rev().map(HostPage).collect(),
                live: BTreeSet::new(),
            }
        }
    }
    impl HostPageAlloc for FakeAlloc {
        fn alloc(&mut self) -> Option<HostPage> {
            let p = self.free.pop()?;
            self.live.insert(p);
            Some(p)
        }
        fn free(&mut self, page: HostPage) {
            assert!(self.live.remove(&page), "free of {page:?} not allocated");
            self.free.push(page);
        }
    }

    fn put(host: &mut FakeHostMemory, page: HostPage, index: usize, v: u64) {
        host.write(page, index * 8, &v.to_le_bytes()).unwrap();
    }

    /// One vGPU: GGTT entries 0..4 (aperture), guest frames 0x100.. on host
    /// pages 100.., shadow pages from 300.., scratch page 1.
    struct Rig {
        be: FakePhysGgtt,
        gm: FakeGuestMemory,
        host: FakeHostMemory,
        alloc: FakeAlloc,
        cpu: RecordingCpu,
    }

    fn rig() -> Rig {
        Rig {
            be: FakePhysGgtt::new(8),
            gm: FakeGuestMemory::new(0x100, 32, 100),
            host: FakeHostMemory::new(400),
            alloc: FakeAlloc::new(300, 8),
            cpu: RecordingCpu::default(),
        }
    }

    const PD_GMA: u64 = 2 * PAGE_SIZE;

    #[test]
    fn register_offsets_and_address_split() {
        assert_eq!(pp_dir_base(EngineId::Rcs), 0x2228);
        assert_eq!(pp_dir_base(EngineId::Bcs), 0x22228);
        let a = (3 << 21) | (7 << 12) | 0x123;
        assert_eq!((pde_index(a), pte_index(a)), (3, 7));
        let mut host = FakeHostMemory::new(4);
        assert_eq!(walk(&host, HostPage(0), PPGTT_SIZE), None);
        assert_eq!(walk(&host, HostPage(0), 0), None);
        put(&mut host, HostPage(0), 511, Pte::new(HostPage(1)).0);
        put(&mut host, HostPage(1), 511, Pte::new(HostPage(3)).0);
        assert_eq!(walk(&host, HostPage(0), PPGTT_SIZE - 1), Some(HostPage(3)));
        // A PDE naming a page beyond host memory does not translate.
        put(&mut host, HostPage(0), 0, Pte::new(HostPage(77)).0);
        assert_eq!(walk(&host, HostPage(0), 0), None);
    }

    #[test]
    fn sync_shadows_translates_and_tracks_guest_updates() {
        let mut r = rig();
        let (mut gs, mut ss) = (vec![0; 4], vec![0; 4]);
        let mut ggtt = Ggtt::new(
            VgpuGm {
                aperture: GmRange::new(0, 4 * PAGE_SIZE),
                high: GmRange::default(),
            },
            HostPage(1),
            &mut gs,
            &mut ss,
            &mut r.be,
        )
        .unwrap();
        let mut snap = vec![0; 4 * ENTRIES];
        let mut pp: Ppgtt<'_, 4> = Ppgtt::new(&mut snap).unwrap();
        assert_eq!(pp.shadow_root(), None);

        // PD_GMA not mapped in the guest GGTT yet.
        assert_eq!(
            pp.sync(PD_GMA, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc),
            Err(PpgttError::PdNotMapped)
        );
        assert_eq!(
            pp.sync(PD_GMA + 8, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc),
            Err(PpgttError::PdMisaligned)
        );
        assert_eq!(
            pp.sync(16 * PAGE_SIZE, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc),
            Err(PpgttError::PdNotMapped)
        );

        // Guest: PD in gfn 0x101 (GGTT entry 2), PDE 3 -> PT gfn 0x102,
        // PTE 7 -> gfn 0x105, PTE 8 -> gfn 0x900 (not guest memory).
        ggtt.write_pte(&mut r.gm, &mut r.be, &mut r.cpu, 2, (0x101 << 12) | 1);
        put(&mut r.host, HostPage(101), 3, (0x102 << 12) | 1);
        put(&mut r.host, HostPage(102), 7, (0x105 << 12) | 0x3);
        put(&mut r.host, HostPage(102), 8, (0x900 << 12) | 1);
        let root = pp
            .sync(PD_GMA, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc)
            .unwrap();
        assert_eq!(pp.shadow_root(), Some(root));
        assert!(r.alloc.live.contains(&root));
        let a = (3 << 21) | (7 << 12);
        assert_eq!(walk(&r.host, root, a + 0xabc), Some(HostPage(105)));
        assert_eq!(walk(&r.host, root, (3 << 21) | (8 << 12)), None);
        assert_eq!(walk(&r.host, root, 4 << 21), None);
        assert_eq!(pp.stats().reject_frame_not_mapped, 1);
        assert_eq!(pp.pinned_pages(), 1);
        // GGTT holds one pin (the PD's frame), PPGTT one; nothing transient.
        assert_eq!(r.gm.outstanding_pins(), 2);
        assert_eq!(pp.shadow_tables(), 1);

        // A re-sync with no guest change rewrites nothing.
        let before = pp.stats().pte_updates;
        assert_eq!(
            pp.sync(PD_GMA, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc),
            Ok(root)
        );
        assert_eq!(pp.stats().pte_updates, before);

        // Guest updates a PTE in place: the next sync picks it up.
        put(&mut r.host, HostPage(102), 7, (0x106 << 12) | 1);
        assert_eq!(
            walk(&r.host, root, a),
            Some(HostPage(105)),
            "not before the sync"
        );
        pp.sync(PD_GMA, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc)
            .unwrap();
        assert_eq!(walk(&r.host, root, a), Some(HostPage(106)));
        assert_eq!(pp.stats().pte_updates, before + 1);
        assert_eq!((r.gm.pins_of(0x105), r.gm.pins_of(0x106)), (0, 1));

        // Guest repoints PDE 3 at another PT: the old shadow PT is unhooked
        // and kept, with its pin, for re-use.
        put(&mut r.host, HostPage(103), 7, (0x107 << 12) | 1);
        put(&mut r.host, HostPage(101), 3, (0x103 << 12) | 1);
        pp.sync(PD_GMA, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc)
            .unwrap();
        assert_eq!(walk(&r.host, root, a), Some(HostPage(107)));
        assert_eq!((r.gm.pins_of(0x106), r.gm.pins_of(0x107)), (1, 1));
        assert_eq!((pp.shadow_tables(), pp.cached_tables()), (2, 1));
        assert_eq!(pp.stats().pts_released, 0);
        assert_eq!(r.alloc.live.len(), 3);

        // Back to the first PT: the cached shadow is hooked back, nothing is
        // pinned again.
        put(&mut r.host, HostPage(101), 3, (0x102 << 12) | 1);
        pp.sync(PD_GMA, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc)
            .unwrap();
        assert_eq!(walk(&r.host, root, a), Some(HostPage(106)));
        assert_eq!(pp.stats().pts_reused, 1);
        // Pin work: the PD and PT frames (released again) and the retry of
        // PTE 8 (0x900, refused); no data page is pinned again.
        assert_eq!(
            pp.last_sync(),
            SyncWork {
                reads: 2 * ENTRIES as u64,
                pins: 3,
                unpins: 2
            }
        );
        assert_eq!((r.gm.pins_of(0x106), r.gm.pins_of(0x107)), (1, 1));

        // PDE to a frame outside guest memory: not present in the shadow.
        put(&mut r.host, HostPage(101), 3, (0x999 << 12) | 1);
        pp.sync(PD_GMA, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc)
            .unwrap();
        assert_eq!(walk(&r.host, root, a), None);
        assert_eq!(pp.stats().reject_pt_frame, 1);
        assert_eq!(pp.cached_tables(), 2);
        assert_eq!(pp.pinned_pages(), 2, "the cached tables' pins");
        assert_eq!(r.alloc.live.len(), 3);

        pp.destroy(&mut r.gm, &mut r.alloc);
        ggtt.destroy(&mut r.gm, &mut r.be, &mut r.cpu);
        assert_eq!(r.gm.outstanding_pins(), 0);
        assert!(r.alloc.live.is_empty());
    }

    #[test]
    fn capacity_is_enforced_with_a_clear_error() {
        let mut r = rig();
        let (mut gs, mut ss) = (vec![0; 4], vec![0; 4]);
        let mut ggtt = Ggtt::new(
            VgpuGm {
                aperture: GmRange::new(0, 4 * PAGE_SIZE),
                high: GmRange::default(),
            },
            HostPage(1),
            &mut gs,
            &mut ss,
            &mut r.be,
        )
        .unwrap();
        let mut snap = vec![0; 2 * ENTRIES];
        let mut pp: Ppgtt<'_, 2> = Ppgtt::new(&mut snap).unwrap();
        ggtt.write_pte(&mut r.gm, &mut r.be, &mut r.cpu, 2, (0x101 << 12) | 1);
        for (i, pt) in [(0usize, 0x102u64), (1, 0x103), (2, 0x104)] {
            put(&mut r.host, HostPage(101), i, (pt << 12) | 1);
            put(
                &mut r.host,
                HostPage(pt - 0x100 + 100),
                0,
                (0x110 << 12) | 1,
            );
        }
        assert_eq!(
            pp.sync(PD_GMA, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc),
            Err(PpgttError::Capacity)
        );
        assert_eq!(pp.stats().capacity_exceeded, 1);
        assert_eq!(pp.shadow_tables(), 2);
        // What was shadowed is right; the PDE that did not fit is not present.
        let root = pp.shadow_root().unwrap();
        assert_eq!(walk(&r.host, root, 0), Some(HostPage(116)));
        assert_eq!(walk(&r.host, root, 2 << 21), None);
        // The guest drops one table: it fits again.
        put(&mut r.host, HostPage(101), 0, 0);
        assert_eq!(
            pp.sync(PD_GMA, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc),
            Ok(root)
        );
        assert_eq!(walk(&r.host, root, 2 << 21), Some(HostPage(116)));
        assert_eq!(walk(&r.host, root, 0), None);
        // Out of host pages.
        pp.reset(&mut r.gm, &mut r.alloc);
        assert_eq!(pp.shadow_root(), None);
        let mut empty = FakeAlloc::new(0, 0);
        assert_eq!(
            pp.sync(PD_GMA, &ggtt, &mut r.gm, &mut r.host, &mut empty),
            Err(PpgttError::NoHostPage)
        );
        assert_eq!(r.gm.outstanding_pins(), 1); // the GGTT's
        pp.destroy(&mut r.gm, &mut r.alloc);
        ggtt.destroy(&mut r.gm, &mut r.be, &mut r.cpu);
        assert_eq!(r.gm.outstanding_pins(), 0);
        assert!(r.alloc.live.is_empty());
        let mut bad = vec![0; 3];
        assert_eq!(
            Ppgtt::<'_, 2>::new(&mut bad).err(),
            Some(PpgttError::BadStorage)
        );
    }

    #[test]
    fn dma_unmap_pd_change_and_reset_release_everything() {
        let mut r = rig();
        let (mut gs, mut ss) = (vec![0; 4], vec![0; 4]);
        let mut ggtt = Ggtt::new(
            VgpuGm {
                aperture: GmRange::new(0, 4 * PAGE_SIZE),
                high: GmRange::default(),
            },
            HostPage(1),
            &mut gs,
            &mut ss,
            &mut r.be,
        )
        .unwrap();
        let mut snap = vec![0; 4 * ENTRIES];
        let mut pp: Ppgtt<'_, 4> = Ppgtt::new(&mut snap).unwrap();
        ggtt.write_pte(&mut r.gm, &mut r.be, &mut r.cpu, 2, (0x101 << 12) | 1);
        put(&mut r.host, HostPage(101), 0, (0x102 << 12) | 1);
        for j in 0..4 {
            put(
                &mut r.host,
                HostPage(102),
                j,
                ((0x108 + j as u64) << 12) | 1,
            );
        }
        let root = pp
            .sync(PD_GMA, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc)
            .unwrap();
        assert_eq!(pp.pinned_pages(), 4);
        r.gm.unmap(0x109, 2);
        assert_eq!(
            pp.dma_unmap(
                &mut r.gm,
                &mut r.host,
                &mut r.alloc,
                0x109 << 12,
                2 * PAGE_SIZE
            ),
            2
        );
        assert_eq!(walk(&r.host, root, 1 << 12), None);
        assert_eq!(walk(&r.host, root, 3 << 12), Some(HostPage(111)));
        assert_eq!(pp.pinned_pages(), 2);
        // A later sync retries the unmapped frames and still refuses them.
        pp.sync(PD_GMA, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc)
            .unwrap();
        assert_eq!(walk(&r.host, root, 1 << 12), None);
        assert_eq!(pp.pinned_pages(), 2);
        assert_eq!(r.gm.outstanding_pins(), 3);

        // The VMM unmaps the guest PT page itself: the next sync drops the
        // shadow PT (found by the property test below).
        put(&mut r.host, HostPage(101), 1, (0x10e << 12) | 1);
        put(&mut r.host, HostPage(114), 0, (0x108 << 12) | 1);
        pp.sync(PD_GMA, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc)
            .unwrap();
        assert_eq!(walk(&r.host, root, 1 << 21), Some(HostPage(108)));
        r.gm.unmap(0x10e, 1);
        assert_eq!(
            pp.dma_unmap(&mut r.gm, &mut r.host, &mut r.alloc, 0x10e << 12, PAGE_SIZE),
            0
        );
        pp.sync(PD_GMA, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc)
            .unwrap();
        assert_eq!(walk(&r.host, root, 1 << 21), None);
        assert_eq!(pp.pinned_pages(), 2);

        // The guest moves PP_DIR_BASE: the whole shadow is rebuilt.
        ggtt.write_pte(&mut r.gm, &mut r.be, &mut r.cpu, 3, (0x104 << 12) | 1);
        put(&mut r.host, HostPage(104), 5, (0x102 << 12) | 1);
        let root2 = pp
            .sync(3 * PAGE_SIZE, &ggtt, &mut r.gm, &mut r.host, &mut r.alloc)
            .unwrap();
        assert_eq!(walk(&r.host, root2, 5 << 21), Some(HostPage(108)));
        assert_eq!(walk(&r.host, root2, 0), None);
        assert_eq!(r.alloc.live.len(), 2);

        pp.reset(&mut r.gm, &mut r.alloc);
        assert_eq!(pp.pinned_pages(), 0);
        assert!(r.alloc.live.is_empty());
        assert_eq!(r.gm.outstanding_pins(), 2); // the GGTT's two entries
        pp.destroy(&mut r.gm, &mut r.alloc);
        ggtt.destroy(&mut r.gm, &mut r.be, &mut r.cpu);
        assert_eq!(r.gm.outstanding_pins(), 0);
    }

    // ---- isolation property: two vGPUs' shadow PPGTTs ----

    const NV: usize = 2;
    const CAP: usize = 3;
    const IDX: [usize; 4] = [0, 1, 2, 511];

    fn vgpu_gm(k: usize) -> VgpuGm {
        let k = k as u64;
        VgpuGm {
            aperture: GmRange::new(4 * k * PAGE_SIZE, 4 * PAGE_SIZE),
            high: GmRange::default(),
        }
    }
    fn guest_mem(k: usize) -> FakeGuestMemory {
        // Guest k: frames [0x20 + 0x10k, +10) on host pages [100 + 50k, +10).
        FakeGuestMemory::new(0x20 + 0x10 * k as u64, 10, 100 + 50 * k as u64)
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Guest GGTT entry for a PD candidate address.
        Ggtt {
            k: usize,
            entry: u64,
            gfn: u64,
        },
        /// The guest CPU writes an 8-byte entry into one of its own frames.
        Entry {
            k: usize,
            gfn: u64,
            idx: usize,
            value: u64,
        },
        /// The guest CPU clears the present bit of such an entry.
        Clear {
            k: usize,
            gfn: u64,
            idx: usize,
        },
        Sync {
            k: usize,
            entry: u64,
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

    /// Mostly guest `k`'s own frames, sometimes anything (the other guest's
    /// frames, gaps, frames beyond both).
    fn frame(k: usize) -> impl Strategy<Value = u64> {
        let base = 0x20 + 0x10 * k as u64;
        prop_oneof![3 => base..base + 10, 1 => 0x18u64..0x48]
    }

    /// A frame the guest writes entries into: often one of its PD candidates.
    fn table(k: usize) -> impl Strategy<Value = u64> {
        let base = 0x20 + 0x10 * k as u64;
        prop_oneof![1 => base..base + 2, 1 => frame(k)]
    }

    fn op() -> impl Strategy<Value = Op> {
        (0..NV).prop_flat_map(|k| {
            prop_oneof![
                1 => (0u64..10, frame(k)).prop_map(move |(e, gfn)| Op::Ggtt { k, entry: if e < 8 { 4 * k as u64 + e % 4 } else { e }, gfn }),
                10 => (table(k), 0..IDX.len(), frame(k), 0u8..6).prop_map(move |(gfn, i, f, p)| Op::Entry {
                    k, gfn, idx: IDX[i], value: (f << 12) | u64::from(p != 0) | 0x10
                }),
                2 => (table(k), 0..IDX.len()).prop_map(move |(gfn, i)| Op::Clear { k, gfn, idx: IDX[i] }),
                4 => (0u64..10).prop_map(move |e| Op::Sync { k, entry: if e < 8 { 4 * k as u64 + e % 2 } else { e } }),
                1 => (frame(k), 1u64..4).prop_map(move |(gfn, n)| Op::Unmap { k, gfn, n }),
                1 => Just(Op::Reset { k }),
            ]
        })
    }

    /// What the shadow must translate `addr` to after a successful sync of
    /// the guest tables rooted at guest frame `pd`, from guest memory alone.
    fn expected(
        host: &FakeHostMemory,
        gm: &FakeGuestMemory,
        pd: u64,
        addr: u64,
    ) -> Option<HostPage> {
        let pd_page = gm.backing(pd)?;
        let pde = read_entry(host, pd_page, pde_index(addr))?;
        if pde & 1 == 0 {
            return None;
        }
        let pt_page = gm.backing(entry_frame(pde))?;
        let pte = read_entry(host, pt_page, pte_index(addr))?;
        if pte & 1 == 0 {
            return None;
        }
        gm.backing(entry_frame(pte))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn shadow_ppgtt_walks_only_yield_the_owners_pages(ops in proptest::collection::vec(op(), 1..100)) {
            let mut be = FakePhysGgtt::new(16);
            let mut host = FakeHostMemory::new(400);
            let mut mems: Vec<FakeGuestMemory> = (0..NV).map(guest_mem).collect();
            let mut allocs: Vec<FakeAlloc> = (0..NV).map(|k| FakeAlloc::new(200 + 50 * k as u64, 6)).collect();
            let mut cpu = RecordingCpu::default();
            let mut gstore: Vec<(Vec<u64>, Vec<u64>)> = (0..NV).map(|_| (vec![0; 4], vec![0; 4])).collect();
            let mut ggtts: Vec<Ggtt<'_>> = gstore.iter_mut().enumerate()
                .map(|(k, (a, b))| Ggtt::new(vgpu_gm(k), HostPage(1 + k as u64), a, b, &mut be).unwrap()).collect();
            let mut snaps: Vec<Vec<u64>> = (0..NV).map(|_| vec![0; CAP * ENTRIES]).collect();
            let mut pps: Vec<Ppgtt<'_, CAP>> = snaps.iter_mut().map(|s| Ppgtt::new(s).unwrap()).collect();
            // Guest k's two PD candidates: GGTT entries 4k, 4k+1 -> its first two frames.
            for k in 0..NV {
                for e in 0..2u64 {
                    let gfn = mems[k].gfn_base + e;
                    ggtts[k].write_pte(&mut mems[k], &mut be, &mut cpu, 4 * k as u64 + e, (gfn << 12) | 1);
                }
            }

            for op in ops {
                let mut synced: Option<(usize, u64)> = None;
                match op {
                    Op::Ggtt { k, entry, gfn } => {
                        ggtts[k].write_pte(&mut mems[k], &mut be, &mut cpu, entry, (gfn << 12) | 1);
                    }
                    Op::Entry { k, gfn, idx, value } => {
                        if let Some(p) = mems[k].backing(gfn) {
                            put(&mut host, p, idx, value);
                        }
                    }
                    Op::Clear { k, gfn, idx } => {
                        if let Some(p) = mems[k].backing(gfn) {
                            let v = read_entry(&host, p, idx).unwrap();
                            put(&mut host, p, idx, v & !1);
                        }
                    }
                    Op::Sync { k, entry } => {
                        let gma = entry * PAGE_SIZE;
                        let r = pps[k].sync(gma, &ggtts[k], &mut mems[k], &mut host, &mut allocs[k]);
                        match r {
                            Ok(root) => {
                                prop_assert_eq!(Some(root), pps[k].shadow_root());
                                synced = Some((k, ggtts[k].guest_frame(gma).unwrap()));
                            }
                            Err(e) => prop_assert!(matches!(e, PpgttError::Capacity | PpgttError::PdNotMapped | PpgttError::PdFrame(_)), "{:?}", e),
                        }
                    }
                    Op::Unmap { k, gfn, n } => {
                        mems[k].unmap(gfn, n);
                        ggtts[k].dma_unmap(&mut mems[k], &mut be, &mut cpu, gfn << 12, n << 12);
                        pps[k].dma_unmap(&mut mems[k], &mut host, &mut allocs[k], gfn << 12, n << 12);
                    }
                    Op::Reset { k } => pps[k].reset(&mut mems[k], &mut allocs[k]),
                }
                for k in 0..NV {
                    prop_assert_eq!(mems[k].outstanding_pins(), ggtts[k].mapped_entries() + pps[k].pinned_pages());
                    let Some(root) = pps[k].shadow_root() else { continue };
                    prop_assert!(allocs[k].live.contains(&root));
                    let mut pinned_seen = 0u64;
                    for i in 0..ENTRIES {
                        let pde = read_entry(&host, root, i).unwrap();
                        if pde & 1 == 0 {
                            // Every non-zero guest entry sits at an IDX index.
                            if let Some((_, pd)) = synced.filter(|&(s, _)| s == k) {
                                for j in IDX {
                                    let a = ((i as u64) << 21) | ((j as u64) << 12);
                                    prop_assert_eq!(expected(&host, &mems[k], pd, a), None, "vGPU {} addr {:#x} missing", k, a);
                                }
                            }
                            continue;
                        }
                        // Shadow PTs are the owner's own shadow pages.
                        prop_assert!(allocs[k].live.contains(&HostPage(entry_frame(pde))));
                        for j in 0..ENTRIES {
                            let a = ((i as u64) << 21) | ((j as u64) << 12);
                            if let Some(p) = walk(&host, root, a) {
                                let m = &mems[k];
                                let own = p.0 >= m.host_base && p.0 < m.host_base + m.len
                                    && m.backing(p.0 - m.host_base + m.gfn_base) == Some(p);
                                prop_assert!(own, "vGPU {} walk({:#x}) = {:?} not its page", k, a, p);
                                pinned_seen += 1;
                            }
                            if synced.map(|(s, _)| s) == Some(k) {
                                let pd = synced.unwrap().1;
                                prop_assert_eq!(walk(&host, root, a), expected(&host, &mems[k], pd, a), "vGPU {} addr {:#x}", k, a);
                            }
                        }
                    }
                    prop_assert_eq!(pinned_seen + pps[k].cached_pinned(), pps[k].pinned_pages());
                }
            }
            for (k, pp) in pps.into_iter().enumerate() {
                pp.destroy(&mut mems[k], &mut allocs[k]);
                prop_assert!(allocs[k].live.is_empty());
            }
            for (k, g) in ggtts.into_iter().enumerate() {
                g.destroy(&mut mems[k], &mut be, &mut cpu);
                prop_assert_eq!(mems[k].outstanding_pins(), 0);
            }
        }
    }
}
