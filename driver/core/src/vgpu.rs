//! One vGPU as the VFIO glue sees it (paper §3.1: the vGPU instance of a VM;
//! §3.3–3.5: what is trapped and how each trap is mediated): the facade that
//! ties the virtual PCI configuration space ([`super::cfgspace`]), the
//! trapped BAR0 ([`super::mmio`], with PVINFO), the shared shadow GGTT
//! ([`super::ggtt`]) with aperture coherence ([`super::aperture`]), the
//! shadow PPGTT ([`super::ppgtt`]) and the physical side ([`super::gpu`]:
//! ring shadows, scheduler, virtual interrupts) together, so the kernel glue
//! is a table from VFIO callbacks to these calls.
//!
//! # Callback table
//! | VFIO / kernel callback | call | locks |
//! |---|---|---|
//! | `mdev probe` → `vfio_device_ops.init` | [`Vgpu::create`] | GPU |
//! | `vfio_device_ops.release` | [`Vgpu::destroy`] | GPU |
//! | `open_device`, `VFIO_DEVICE_RESET` | [`Vgpu::reset`] | vGPU, GPU |
//! | `read` of the config region | [`Vgpu::cfg_read_span`] | vGPU |
//! | `write` of the config region | [`Vgpu::cfg_write`] | vGPU |
//! | `read` of BAR0 | [`Vgpu::bar0_read`] | vGPU, GPU |
//! | `write` of BAR0 | [`Vgpu::bar0_write`], then signal its `delivery`, kick the engine worker | vGPU, GPU |
//! | `vm_operations.fault` on the BAR2 mapping | [`Vgpu::aperture_fault`] | vGPU |
//! | `read`/`write` of BAR2 (no mapping) | [`Vgpu::aperture_fault`] per page | vGPU |
//! | sparse-mmap capability of BAR2 | [`Vgpu::mmap_area`] | none |
//! | `vfio_device_ops.dma_unmap` | [`Vgpu::dma_unmap`] | vGPU, GPU |
//! | engine workqueue | [`super::gpu::Gpu::run_engines`], then per delivered vGPU [`Vgpu::signal`] | GPU; then vGPU |
//! | sysfs `gvt/stats` | [`Vgpu::write_stats`] | vGPU, GPU |
//! | `VFIO_DEVICE_QUERY_GFX_PLANE` | [`Vgpu::query_gfx_plane`] (zap the display region when the id changed) | vGPU |
//! | `vm_operations.fault` / `read` of the display region | [`Vgpu::display_fault`], [`Vgpu::display_read`] | vGPU |
//! | `VFIO_DEVICE_GET_GFX_DMABUF` | [`Vgpu::dmabuf_plane`], [`Vgpu::framebuffer_pages`] | vGPU |
//! | sysfs `gvt/display` | [`Vgpu::display_plane`], [`Vgpu::plane_ids`] | vGPU |
//!
//! "vGPU, GPU" means: take the vGPU's lock, then the GPU lock (the order of
//! [`super::gpu`]'s locking model); signal eventfds after dropping both.
//!
//! Big state is owned by the caller and lent per call ([`VgpuStorage`]: the
//! 2 MiB vreg file, the shadow GGTT's two arrays, the PPGTT snapshot); it
//! comes with the services of the kernel in one [`Env`], whose one type
//! parameter names them all ([`Services`]).  The core allocates nothing.

use core::fmt;

use super::aperture::{self, ApertureError};
use super::backend::EngineId;
use super::cfgspace::{CfgError, CfgSpace, CFG_SIZE};
use super::display::{self, GfxCaps, InvalidQuery, NoPlane, Plane, PlaneIds, QueryAnswer};
use super::ggtt::{Ggtt, GgttError, GgttState, PteWrite, VgpuGm};
use super::gm_view::GmView;
use super::gpu::{Gpu, GpuError, RingSetup, SubmitOutcome};
use super::gpu_lock::Locked;
use super::irq::{Delivery, GtIrq, DE_PIPEA_VBLANK, GTIER, GTIIR, GTIMR};
use super::mem::{GmRange, HostPage, MemError};
use super::mmio::{self, ring_regs, Bar0Region, MmioError, MmioOutcome, TrapEvent, VgpuMmio};
use super::partition::Partition;
use super::ppgtt::{Ppgtt, PpgttError, PpgttState, ENTRIES};
use super::pvinfo::{vgtif, PvEvent, PvInfo, PvInfoError, PVINFO_BASE, VGT_CAPS_FULL_PPGTT};
use super::regs::{self, ring, DisplayReg, Gdrst};
use super::sched::SlotId;
use super::services::{Clock, GpuLock, HostMemory, Services};
use super::vblank::{Vblank, DEFAULT_PERIOD_NS};

pub use super::mmio::BAR0_SIZE;
pub use super::regs::VREG_DWORDS;

/// Size of the configuration-space region.
pub const CONFIG_SIZE: u64 = CFG_SIZE as u64;
/// Shadow page tables per vGPU by default (each maps 2 MiB of local GM).
pub const DEFAULT_PPGTT_TABLES: usize = 32;
/// Distinct planes whose ids a vGPU remembers (double and triple buffering
/// flip among this many surfaces and keep their ids, [`display::PlaneIds`]).
pub const PLANE_IDS: usize = 4;

/// Why a region access or setup was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessError {
    Config(CfgError),
    Mmio(MmioError),
    PvInfo(PvInfoError),
    Ggtt(GgttError),
    Ppgtt(PpgttError),
    Gpu(GpuError),
    /// A user buffer could not be read or written (set by the glue).
    Fault,
}

impl From<CfgError> for AccessError {
    fn from(e: CfgError) -> Self {
        AccessError::Config(e)
    }
}

impl From<MmioError> for AccessError {
    fn from(e: MmioError) -> Self {
        AccessError::Mmio(e)
    }
}

/// The caller-owned storage of one vGPU, lent to every call.
pub struct VgpuStorage<'a> {
    /// [`VREG_DWORDS`] dwords: the virtual register file.
    pub vregs: &'a mut [u32],
    /// One `u64` per GGTT entry of the vGPU's slices (aperture first): what
    /// the guest wrote.
    pub ggtt_guest: &'a mut [u64],
    /// Same length: the physical entry written for each.
    pub ggtt_shadow: &'a mut [u64],
    /// `P * 512` `u64`s: the shadow PPGTT's snapshot.
    pub ppgtt_snap: &'a mut [u64],
}

impl VgpuStorage<'_> {
    /// The shadow GGTT whose state is `g`, resumed on this storage.
    fn ggtt(&mut self, g: GgttState) -> Result<Ggtt<'_>, GgttError> {
        Ggtt::resume(g, &mut *self.ggtt_guest, &mut *self.ggtt_shadow)
    }

    /// The shadow PPGTT whose state is `p`, resumed on this storage.
    fn ppgtt<const P: usize>(&mut self, p: PpgttState<P>) -> Result<Ppgtt<'_, P>, PpgttError> {
        Ppgtt::resume(p, &mut *self.ppgtt_snap)
    }

    /// Both shadow tables at once (a PPGTT sync reads the GGTT).
    fn tables<const P: usize>(
        &mut self,
        g: GgttState,
        p: PpgttState<P>,
    ) -> (
        Result<Ggtt<'_>, GgttError>,
        Result<Ppgtt<'_, P>, PpgttError>,
    ) {
        let g = Ggtt::resume(g, &mut *self.ggtt_guest, &mut *self.ggtt_shadow);
        (g, Ppgtt::resume(p, &mut *self.ppgtt_snap))
    }
}

/// PVINFO `cursor_x_hot`/`cursor_y_hot` say "no hotspot" (0xFFFFFFFF, as
/// GVT-g's `populate_pvinfo_page`) until the guest writes them.
fn no_cursor_hotspot(vregs: &mut [u32]) {
    for off in [vgtif::CURSOR_X_HOT, vgtif::CURSOR_Y_HOT] {
        if let Some(d) = regs::vreg_mut(vregs, PVINFO_BASE + off) {
            *d = u32::MAX;
        }
    }
}

/// Element counts of a [`VgpuStorage`] for a vGPU owning `part` with `P`
/// shadow page tables: (vregs, each GGTT array, PPGTT snapshot).
pub const fn storage_sizes<const P: usize>(part: &Partition) -> (usize, usize, usize) {
    let gm = VgpuGm {
        aperture: part.aperture,
        high: part.high,
    };
    (VREG_DWORDS, gm.entries(), P * ENTRIES)
}

/// Host memory one vGPU holds, in bytes, by what holds it (sysfs
/// `gvt/stats` `host_memory_*` lines, the host memory bench).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VgpuMemory {
    /// The sparse vreg file ([`VREG_DWORDS`] dwords).
    pub vregs: u64,
    /// The shadow GGTT's two arrays (16 bytes per GM page of the slices).
    pub ggtt: u64,
    /// The shadow PPGTT's snapshot (`P * 512` entries).
    pub ppgtt_snapshot: u64,
    /// Shadow PPGTT tables held now (allocated lazily, at most `P + 1`
    /// pages).
    pub ppgtt_tables: u64,
    /// Shadow rings and batch pools ([`super::gpu::SHADOW_PAGES_PER_VGPU`]
    /// pages) and the scratch page.
    pub shadow: u64,
    /// The facade itself ([`Vgpu`]).
    pub state: u64,
}

impl VgpuMemory {
    /// What a vGPU owning `part` holds before any shadow PPGTT table.
    pub const fn of<const P: usize>(part: &Partition) -> Self {
        let (nregs, nggtt, nsnap) = storage_sizes::<P>(part);
        VgpuMemory {
            vregs: nregs as u64 * 4,
            ggtt: nggtt as u64 * 16,
            ppgtt_snapshot: nsnap as u64 * 8,
            ppgtt_tables: 0,
            shadow: (super::gpu::SHADOW_PAGES_PER_VGPU as u64 + 1) * super::mem::PAGE_SIZE,
            state: core::mem::size_of::<Vgpu<P>>() as u64,
        }
    }
    pub const fn total(&self) -> u64 {
        self.vregs + self.ggtt + self.ppgtt_snapshot + self.ppgtt_tables + self.shadow + self.state
    }
}

/// Everything one facade call works with besides the vGPU itself: the
/// vGPU's storage and the services of the kernel, named by one type `S`
/// ([`Services`]): the GPU lock, host pages (engine memory, shadow tables),
/// the shadow-table page allocator, the clock, and this vGPU's guest memory
/// (`vfio_pin_pages`) and CPU mappings of BAR2.
pub struct Env<'a, S: Services> {
    pub st: VgpuStorage<'a>,
    pub gpu: &'a mut S::Lock,
    pub host: &'a mut S::Host,
    pub alloc: &'a mut S::Alloc,
    pub clock: &'a S::Clock,
    pub guest: &'a mut S::Guest,
    pub cpu: &'a mut S::Cpu,
}

impl<'a, L, H, A, C, G, M> Env<'a, (L, H, A, C, G, M)>
where
    (L, H, A, C, G, M): Services<Lock = L, Host = H, Alloc = A, Clock = C, Guest = G, Cpu = M>,
{
    /// An `Env` whose services are these six (the tuple is their
    /// [`Services`]).
    pub fn new(
        st: VgpuStorage<'a>,
        gpu: &'a mut L,
        host: &'a mut H,
        alloc: &'a mut A,
        clock: &'a C,
        guest: &'a mut G,
        cpu: &'a mut M,
    ) -> Self {
        Self {
            st,
            gpu,
            host,
            alloc,
            clock,
            guest,
            cpu,
        }
    }
}

/// What [`Vgpu::create`] needs besides its [`Env`].
#[derive(Clone, Copy, Debug)]
pub struct VgpuParams<'p> {
    pub id: u32,
    pub part: Partition,
    /// Size of the parent's aperture (BAR2).
    pub aperture_size: u64,
    /// Scheduling weight (1..=100).
    pub weight: u32,
    /// A host page owned by this vGPU alone: what unmapped GGTT entries map.
    pub scratch: HostPage,
    /// [`super::gpu::SHADOW_PAGES_PER_VGPU`] host pages for the shadow rings
    /// and batch pools.
    pub shadow_pages: &'p [HostPage],
}

/// Event counters of the glue-visible surface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VgpuCounters {
    pub cfg_reads: u64,
    pub cfg_writes: u64,
    pub cfg_rejected: u64,
    pub resets: u64,
    pub submissions: u64,
    pub pte_rejected: u64,
    pub pte_dropped: u64,
    pub display_writes: u64,
    /// Vblank timer ticks or counter reads that found new vblanks (each
    /// latches the vblank interrupt unless masked).
    pub vblanks: u64,
    pub pvinfo_events: u64,
}

/// How one trapped write was routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routed {
    /// A GGTT PTE write and what the shadow GGTT made of it.
    Pte(PteWrite),
    /// A TAIL write and what became of the submission.
    Submit(SubmitOutcome),
    /// A new PPGTT root (render).
    PpDirBase(u32),
    /// An interrupt register.
    Irq,
    /// GDRST: the engines named were reset for this vGPU.
    Reset(Gdrst),
    /// A fence register; `accepted`: the physical fence was programmed
    /// (false: its range is outside the vGPU's slices, fence disabled).
    Fence { index: u32, accepted: bool },
    /// A display register (one plane per vGPU, kept virtual).
    Display(DisplayReg),
    /// A PVINFO notification.
    PvInfo(PvEvent),
}

/// The result of [`Vgpu::bar0_write`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bar0Write {
    /// The routed events, in order (an 8-byte write may hit two registers).
    pub routed: [Option<Routed>; 2],
    /// What to signal to the guest now.
    pub delivery: Delivery,
}

impl Bar0Write {
    /// The submission outcome, if this was a TAIL write.
    pub fn submit(&self) -> Option<SubmitOutcome> {
        self.routed.iter().flatten().find_map(|r| match r {
            Routed::Submit(s) => Some(*s),
            _ => None,
        })
    }
    /// The PTE outcome, if this was a GGTT write.
    pub fn pte(&self) -> Option<PteWrite> {
        self.routed.iter().flatten().find_map(|r| match r {
            Routed::Pte(p) => Some(*p),
            _ => None,
        })
    }
}

/// What the glue signals for a [`Delivery`], given the guest's interrupt
/// configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signal {
    /// Signal the MSI eventfd once.
    pub msi: bool,
    /// Set the INTx line to this level (signal the INTx eventfd on `true`;
    /// VFIO's INTx is automasked until the VMM unmasks it).
    pub intx: Option<bool>,
}

/// A vGPU: identity, partition, emulated device surfaces and mediator state.
#[derive(Clone)]
pub struct Vgpu<const P: usize = DEFAULT_PPGTT_TABLES> {
    pub(crate) id: u32,
    pub(crate) part: Partition,
    pub(crate) slot: SlotId,
    pub(crate) cfg: CfgSpace,
    pub(crate) mmio: VgpuMmio,
    pub(crate) counters: VgpuCounters,
    pub(crate) ggtt: GgttState,
    pub(crate) ppgtt: PpgttState<P>,
    /// The guest (re)programmed START/CTL/HEAD since the last TAIL.
    pub(crate) ring_dirty: [bool; EngineId::COUNT],
    /// Guest PP_DIR_BASE (render).
    pub(crate) pd: Option<u32>,
    /// Identity of the primary planes reported by QUERY_GFX_PLANE; the
    /// current one is what the display region maps.
    pub(crate) plane_ids: PlaneIds<PLANE_IDS>,
    /// Identity of the cursor planes reported (ids with
    /// [`display::CURSOR_ID_BIT`] set).
    pub(crate) cursor_ids: PlaneIds<2>,
    /// Pipe A's vblank clock and counters ([`super::vblank`]).
    pub(crate) vblank: Vblank,
    /// The display-engine interrupt block (`DEIMR`/`DEIIR`/`DEIER`): the
    /// vblank interrupt.
    pub(crate) de: GtIrq,
    /// The guest's GM view and this vGPU's placement ([`GmView`]): the
    /// identity for a fresh vGPU; a migration target takes the source's.
    pub(crate) view: GmView,
}

impl<const P: usize> Vgpu<P> {
    /// Create vGPU `p.id` on `gpu`: a scheduler slot, its shadow areas, its
    /// shadow GGTT (every entry of its slices on scratch), an empty PPGTT,
    /// power-on registers and config space.
    pub fn create<const N: usize, S: Services<Gpu = Gpu<N>>>(
        p: VgpuParams<'_>,
        env: &mut Env<'_, S>,
    ) -> Result<Self, AccessError> {
        let pv = PvInfo::new(p.id, VGT_CAPS_FULL_PPGTT, &p.part).map_err(AccessError::PvInfo)?;
        let cfg = CfgSpace::new(p.aperture_size)?;
        if env.st.vregs.len() != VREG_DWORDS {
            return Err(AccessError::Mmio(MmioError::BadState));
        }
        let pp = Ppgtt::<P>::new(&mut *env.st.ppgtt_snap)
            .map_err(AccessError::Ppgtt)?
            .state();
        let gm = VgpuGm {
            aperture: p.part.aperture,
            high: p.part.high,
        };
        // One section: the slot, its shadow areas and every entry of its
        // slices on scratch (bounded by the partition, not by a guest).
        let (slot, ggtt) = env.gpu.with(|gpu, phys| {
            let slot = gpu
                .create_slot(phys, [gm.aperture, gm.high], p.weight, p.shadow_pages)
                .map_err(AccessError::Gpu)?;
            let g = gpu.with_backend(phys, |b| {
                Ggtt::new(
                    gm,
                    p.scratch,
                    &mut *env.st.ggtt_guest,
                    &mut *env.st.ggtt_shadow,
                    b,
                )
                .map(|g| g.state())
            });
            match g {
                Ok(g) => Ok((slot, g)),
                Err(e) => {
                    let _ = gpu.destroy_slot(phys, env.host, env.clock, slot);
                    Err(AccessError::Ggtt(e))
                }
            }
        })?;
        let mmio = VgpuMmio::new(pv);
        mmio.reset_vregs(env.st.vregs);
        no_cursor_hotspot(env.st.vregs);
        Ok(Self {
            id: p.id,
            part: p.part,
            slot,
            cfg,
            mmio,
            counters: VgpuCounters::default(),
            ggtt,
            ppgtt: pp,
            ring_dirty: [false; EngineId::COUNT],
            pd: None,
            plane_ids: PlaneIds::new(),
            cursor_ids: PlaneIds::new(),
            vblank: Vblank::stopped(env.clock.now_ns(), DEFAULT_PERIOD_NS),
            de: GtIrq::new(),
            view: GmView::identity(gm),
        })
    }

    /// [`Vgpu::create`] into caller-provided memory (the kernel's heap slot),
    /// so the caller's stack frame never holds the vGPU: the kernel creates
    /// vGPUs deep in the mdev create path, on a 16 KiB stack.
    pub fn create_in<'o, const N: usize, S: Services<Gpu = Gpu<N>>>(
        out: &'o mut core::mem::MaybeUninit<Self>,
        p: VgpuParams<'_>,
        env: &mut Env<'_, S>,
    ) -> Result<&'o mut Self, AccessError> {
        let v = Self::create(p, env)?;
        Ok(out.write(v))
    }

    /// Destroy (VFIO `release`): the engines stop using it, every pin and
    /// shadow page is released, every GGTT entry of its slices and shadow
    /// areas is not present.  The caller then frees its scratch and shadow
    /// pages and the storage.
    pub fn destroy<const N: usize, S: Services<Gpu = Gpu<N>>>(self, env: &mut Env<'_, S>) {
        let _ = env
            .gpu
            .with(|gpu, phys| gpu.destroy_slot(phys, env.host, env.clock, self.slot));
        if let Ok(g) = env.st.ggtt(self.ggtt) {
            // Unpinning happens with the GPU lock free (one section per entry).
            g.destroy(env.guest, &mut Locked::new(env.gpu), env.cpu);
        }
        if let Ok(pp) = env.st.ppgtt(self.ppgtt) {
            pp.destroy(env.guest, env.alloc);
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }
    /// The scheduler slot (index of [`super::gpu::EngineReport::deliveries`]).
    pub fn slot(&self) -> SlotId {
        self.slot
    }
    pub fn partition(&self) -> &Partition {
        &self.part
    }
    pub fn cfg(&self) -> &CfgSpace {
        &self.cfg
    }
    pub fn mmio(&self) -> &VgpuMmio {
        &self.mmio
    }
    pub fn counters(&self) -> &VgpuCounters {
        &self.counters
    }
    /// The shadow GGTT's counters and pin count.
    pub fn ggtt(&self) -> &GgttState {
        &self.ggtt
    }
    /// The shadow PPGTT's counters and pin count.
    pub fn ppgtt(&self) -> &PpgttState<P> {
        &self.ppgtt
    }
    /// Guest pages pinned by this vGPU (GGTT and PPGTT).
    pub fn pinned_pages(&self) -> u64 {
        self.ggtt
            .mapped_entries()
            .saturating_add(self.ppgtt.pinned_pages())
    }

    /// Device reset (`VFIO_DEVICE_RESET`, `open_device`): power-on config
    /// space and registers, an empty GGTT (every pin released, every entry on
    /// scratch), no PPGTT, every ring unprogrammed and its work dropped,
    /// interrupts cleared, hang count and Failed state cleared.
    pub fn reset<const N: usize, S: Services<Gpu = Gpu<N>>>(&mut self, env: &mut Env<'_, S>) {
        let _ = env
            .gpu
            .with(|gpu, phys| gpu.reset_slot(phys, env.host, env.clock, self.slot));
        self.cfg.reset();
        self.mmio.reset_vregs(env.st.vregs);
        no_cursor_hotspot(env.st.vregs);
        if let Ok(mut g) = env.st.ggtt(self.ggtt) {
            g.reset(env.guest, &mut Locked::new(env.gpu), env.cpu);
            self.ggtt = g.state();
        }
        if let Ok(mut pp) = env.st.ppgtt(self.ppgtt) {
            pp.reset(env.guest, env.alloc);
            self.ppgtt = pp.state();
        }
        self.ring_dirty = [false; EngineId::COUNT];
        self.pd = None;
        self.plane_ids.clear();
        self.cursor_ids.clear();
        // The plane is off after a reset: the pipe stops; the counters go
        // on from where they were (they are not reset on hardware either).
        let now = env.clock.now_ns();
        self.vblank.tick(now, env.st.vregs);
        self.vblank.set_running(now, false);
        self.vblank.restore(env.st.vregs);
        self.de = GtIrq::new();
        self.counters.resets += 1;
    }

    /// The device changes hands (VFIO open and close): a [`Vgpu::reset`],
    /// and nothing the previous user could observe survives it: pipe A's
    /// frame and flip counters start again from 0, plane and cursor ids
    /// start again from 1 (a `VFIO_DEVICE_RESET` keeps both, as hardware
    /// keeps its counters over a reset).
    pub fn reset_for_new_owner<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &mut self,
        env: &mut Env<'_, S>,
    ) {
        self.reset(env);
        // A migrated guest's view does not outlive its owner.
        let _ = self.set_view(env, GmView::identity(self.placement()), self.id);
        self.vblank = Vblank::stopped(env.clock.now_ns(), self.vblank.period_ns());
        self.vblank.restore(env.st.vregs);
        self.plane_ids = PlaneIds::new();
        self.cursor_ids = PlaneIds::new();
    }

    /// Read `buf.len()` bytes of configuration space at `offset`, as a run of
    /// naturally aligned 4/2/1-byte reads (QEMU reads the whole space in one
    /// `pread` at realize).  Nothing is read unless all of it is in range.
    #[inline]
    pub fn cfg_read_span(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), AccessError> {
        let end = (offset as usize).checked_add(buf.len());
        if end.is_none_or(|e| e > CFG_SIZE) {
            self.counters.cfg_rejected += 1;
            return Err(CfgError::OutOfRange.into());
        }
        // The common case, one naturally aligned register: one read.
        if matches!(buf.len(), 1 | 2 | 4) && offset & (buf.len() as u32 - 1) == 0 {
            self.cfg.read_bytes(offset, buf)?;
            self.counters.cfg_reads += 1;
            return Ok(());
        }
        self.cfg_read_pieces(offset, buf)
    }

    /// [`Vgpu::cfg_read_span`] of anything but one aligned register: the
    /// largest aligned pieces, in order.
    #[inline(never)]
    fn cfg_read_pieces(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), AccessError> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset as usize + done;
            let left = buf.len() - done;
            let n = if at % 4 == 0 && left >= 4 {
                4
            } else if at % 2 == 0 && left >= 2 {
                2
            } else {
                1
            };
            let piece = buf.get_mut(done..done + n).ok_or(CfgError::OutOfRange)?;
            self.cfg.read_bytes(at as u32, piece)?;
            done += n;
        }
        self.counters.cfg_reads += 1;
        Ok(())
    }

    /// One configuration-space write of 1, 2 or 4 naturally aligned bytes.
    pub fn cfg_write(&mut self, offset: u32, data: &[u8]) -> Result<(), AccessError> {
        match self.cfg.write_bytes(offset, data) {
            Ok(_event) => {
                self.counters.cfg_writes += 1;
                Ok(())
            }
            Err(e) => {
                self.counters.cfg_rejected += 1;
                Err(e.into())
            }
        }
    }

    /// Whether a BAR0 access of `size` bytes at `offset` touches a register
    /// whose value lives with the engines ([`Vgpu::refresh`]): only those
    /// reads take the GPU lock; every other register is this vGPU's own.
    fn reads_mediated(offset: u64, size: u32) -> bool {
        // A well-formed access (the only kind asked about) stays in its
        // page: most pages hold none of these registers, and say so first.
        let page = offset >> 12;
        let in_page = |r: u32| u64::from(r) >> 12 == page;
        if !in_page(regs::GT_IIR)
            && !in_page(regs::GT_IMR)
            && !in_page(regs::GT_IER)
            && !EngineId::ALL
                .iter()
                .any(|e| in_page(e.reg(ring::HEAD)) || in_page(e.mmio_base() + ring::EIR))
        {
            return false;
        }
        let hit = |r: u32| {
            offset < u64::from(r) + 4 && offset.saturating_add(u64::from(size)) > u64::from(r)
        };
        hit(regs::GT_IIR)
            || hit(regs::GT_IMR)
            || hit(regs::GT_IER)
            || EngineId::ALL
                .iter()
                .any(|e| hit(e.reg(ring::HEAD)) || hit(e.mmio_base() + ring::EIR))
    }

    /// Whether a BAR0 access of `size` bytes at `offset` touches the display
    /// interrupt block (`DEIMR`, `DEIIR`, `DEIER`), whose values live in
    /// [`Vgpu::refresh_de`]'s source: only those accesses copy them.
    fn touches_de(offset: u64, size: u32) -> bool {
        let (lo, hi) = (u64::from(regs::DE_IMR), u64::from(regs::DE_IER) + 4);
        offset < hi && offset.saturating_add(u64::from(size)) > lo
    }

    /// The display interrupt block's registers into the vreg file (this
    /// vGPU's own state: no GPU lock).
    pub(crate) fn refresh_de(&self, vregs: &mut [u32]) {
        for (off, v) in [
            (regs::DE_IIR, self.de.iir()),
            (regs::DE_IMR, self.de.imr()),
            (regs::DE_IER, self.de.ier()),
        ] {
            if let Some(d) = regs::vreg_mut(vregs, off) {
                *d = v;
            }
        }
    }

    /// Put the mediated registers' current values into the vreg file:
    /// GT IIR/IMR/IER (the virtual interrupt state lives with the engines),
    /// each ring's HEAD (the shadow ring's retirement point, when the ring
    /// is shadowed) and `RING_EIR`.
    pub(crate) fn refresh<const N: usize>(&self, gpu: &Gpu<N>, vregs: &mut [u32]) {
        let mut set = |off: u32, v: u32| {
            if let Some(d) = regs::vreg_mut(vregs, off) {
                *d = v;
            }
        };
        if let Some(i) = gpu.irq(self.slot) {
            set(regs::GT_IIR, i.iir());
            set(regs::GT_IMR, i.imr());
            set(regs::GT_IER, i.ier());
        }
        for e in EngineId::ALL {
            if !self.ring_dirty.get(e.index()).copied().unwrap_or(false) {
                if let Some(h) = gpu.ring_head(self.slot, e) {
                    set(e.reg(ring::HEAD), h);
                }
            }
            set(e.mmio_base() + ring::EIR, gpu.eir(self.slot, e));
        }
    }

    /// One BAR0 read (1/2/4/8 bytes, naturally aligned): registers with the
    /// mediated values (interrupts, HEAD, EIR), PVINFO, or the GGTT view
    /// (exactly what the guest wrote in its slices, 0 elsewhere).
    pub fn bar0_read<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &mut self,
        env: &mut Env<'_, S>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), AccessError> {
        if self.bar0_read_plain(env.st.vregs, offset, buf) {
            return Ok(());
        }
        self.bar0_read_full(env, offset, buf)
    }

    /// The fast path of [`Vgpu::bar0_read`]: a read of plain registers
    /// ([`mmio::plain`]: no table row, no mediated value) is served from the
    /// vreg file alone, with no GPU lock and no services; `false` (nothing
    /// done) for any other access.  The trap glue asks this first.
    #[inline(always)]
    pub fn bar0_read_plain(&mut self, vregs: &[u32], offset: u64, buf: &mut [u8]) -> bool {
        self.mmio.read_plain(vregs, offset, buf)
    }

    /// The fast path of [`Vgpu::bar0_write`], as [`Vgpu::bar0_read_plain`]:
    /// a plain register's write has nothing to route (its
    /// [`Bar0Write`] would be empty).
    #[inline(always)]
    pub fn bar0_write_plain(&mut self, vregs: &mut [u32], offset: u64, data: &[u8]) -> bool {
        self.mmio.write_plain(vregs, offset, data)
    }

    /// [`Vgpu::bar0_read`] without its fast path: for the glue, once
    /// [`Vgpu::bar0_read_plain`] said no.
    pub fn bar0_read_full<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &mut self,
        env: &mut Env<'_, S>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), AccessError> {
        let size = u32::try_from(buf.len()).map_err(|_| MmioError::BadSize)?;
        match mmio::classify(offset, size) {
            Ok(Bar0Region::GgttWindow) => {
                let mut g = env.st.ggtt(self.ggtt).map_err(AccessError::Ggtt)?;
                let r = g.mmio_read(offset, buf);
                self.ggtt = g.state();
                r.map_err(|_| MmioError::BadSize)?;
                self.mmio.count_pte(false, false);
                Ok(())
            }
            Ok(Bar0Region::Registers) => {
                if Self::touches_de(offset, size) {
                    self.refresh_de(env.st.vregs);
                }
                if Self::reads_mediated(offset, size) {
                    let this = &*self;
                    env.gpu.with(|gpu, _| this.refresh(gpu, env.st.vregs));
                }
                Ok(self.mmio.read_bytes(env.st.vregs, offset, buf)?)
            }
            Err(_) => Ok(self.mmio.read_bytes(env.st.vregs, offset, buf)?),
        }
    }

    /// One BAR0 write: emulated, then every event routed (GGTT PTE → shadow
    /// GGTT; TAIL → PPGTT sync, audit, shadow, admission; PP_DIR_BASE;
    /// interrupt registers; GDRST; fences).  Signal `delivery` afterwards and
    /// kick the engine worker when a submission was accepted.
    pub fn bar0_write<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &mut self,
        env: &mut Env<'_, S>,
        offset: u64,
        data: &[u8],
    ) -> Result<Bar0Write, AccessError> {
        if self.bar0_write_plain(env.st.vregs, offset, data) {
            return Ok(Bar0Write::default());
        }
        self.bar0_write_full(env, offset, data)
    }

    /// [`Vgpu::bar0_write`] without its fast path: for the glue, once
    /// [`Vgpu::bar0_write_plain`] said no.
    pub fn bar0_write_full<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &mut self,
        env: &mut Env<'_, S>,
        offset: u64,
        data: &[u8],
    ) -> Result<Bar0Write, AccessError> {
        let size = u32::try_from(data.len()).map_err(|_| MmioError::BadSize)?;
        let mut out = Bar0Write::default();
        if let Ok(Bar0Region::GgttWindow) = mmio::classify(offset, size) {
            let mut g = env.st.ggtt(self.ggtt).map_err(AccessError::Ggtt)?;
            // Pin the new page and unpin the old one with the GPU lock free:
            // only the physical entry's store is under it.
            let r = g.mmio_write(env.guest, &mut Locked::new(env.gpu), env.cpu, offset, data);
            self.ggtt = g.state();
            let w = r.map_err(|_| MmioError::BadSize)?;
            match w {
                PteWrite::Rejected(_) => self.counters.pte_rejected += 1,
                PteWrite::Dropped { .. } => self.counters.pte_dropped += 1,
                _ => {}
            }
            self.mmio
                .count_pte(true, matches!(w, PteWrite::Dropped { .. }));
            out.routed[0] = Some(Routed::Pte(w));
            return Ok(out);
        }
        // Ring programming is shadowed lazily: remember that it changed.
        for e in EngineId::ALL {
            let hit = |rel: u32| {
                let r = e.reg(rel);
                offset < u64::from(r) + 4 && offset.saturating_add(u64::from(size)) > u64::from(r)
            };
            if hit(ring::START) || hit(ring::CTL) || hit(ring::HEAD) {
                if let Some(d) = self.ring_dirty.get_mut(e.index()) {
                    *d = true;
                }
            }
            let eir = e.mmio_base() + ring::EIR;
            if offset == u64::from(eir) {
                if let Ok(b) = <[u8; 4]>::try_from(data) {
                    let slot = self.slot;
                    env.gpu
                        .with(|gpu, _| gpu.clear_eir(slot, e, u32::from_le_bytes(b)));
                }
            }
        }
        // DEIIR is write-one-to-clear and its value comes from the display
        // block, not from the vreg: a 1- or 2-byte write clears only in the
        // bytes written (widened to the dword with zeros, which clear nothing).
        let widened: [u8; 4];
        let de_iir = u64::from(regs::DE_IIR);
        let (offset, data) = if size < 4 && offset >= de_iir && offset < de_iir + 4 {
            let mut b = [0u8; 4];
            let at = (offset - de_iir) as usize;
            if let Some(dst) = b.get_mut(at..at.saturating_add(data.len())) {
                dst.copy_from_slice(data);
            }
            widened = b;
            (de_iir, &widened[..])
        } else {
            (offset, data)
        };
        let outcome = self.mmio.write_bytes(env.st.vregs, offset, data)?;
        // Most writes raise no event: no iterator for them.
        if let MmioOutcome::Event(_) | MmioOutcome::Events(..) = outcome {
            for (i, ev) in outcome.events().enumerate() {
                let r = self.route(env, ev, &mut out.delivery);
                if let Some(slot) = out.routed.get_mut(i) {
                    *slot = Some(r);
                }
            }
        }
        // Only an event (a display or interrupt write, a reset...) or a
        // write to the block itself changes what the DE registers show.
        if out.routed[0].is_some() || Self::touches_de(offset, size) {
            self.refresh_de(env.st.vregs);
        }
        if out.routed[0].is_some() || Self::reads_mediated(offset, size) {
            let this = &*self;
            env.gpu.with(|gpu, _| this.refresh(gpu, env.st.vregs));
        }
        Ok(out)
    }

    fn route<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &mut self,
        env: &mut Env<'_, S>,
        ev: TrapEvent,
        delivery: &mut Delivery,
    ) -> Routed {
        let mut note = |d: Delivery| {
            delivery.msi |= d.msi;
            if d.intx.is_some() {
                delivery.intx = d.intx;
            }
        };
        match ev {
            TrapEvent::RingTail { engine, tail } => {
                self.counters.submissions += 1;
                let (o, d) = self.submit(env, engine, tail);
                note(d);
                Routed::Submit(o)
            }
            TrapEvent::PpDirBase { engine, value } => {
                if engine == EngineId::Rcs {
                    self.pd = if value == 0 { None } else { Some(value) };
                }
                Routed::PpDirBase(value)
            }
            TrapEvent::GgttWrite { .. } => Routed::Pte(PteWrite::Dropped { log: false }),
            TrapEvent::Reset(g) => {
                for e in EngineId::ALL {
                    if g.resets(e) {
                        let slot = self.slot;
                        env.gpu.with(|gpu, phys| {
                            gpu.guest_engine_reset(phys, env.host, env.clock, slot, e)
                        });
                        for rel in [ring::START, ring::CTL, ring::HEAD, ring::TAIL] {
                            if let Some(d) = regs::vreg_mut(env.st.vregs, e.reg(rel)) {
                                *d = 0;
                            }
                        }
                        if let Some(d) = self.ring_dirty.get_mut(e.index()) {
                            *d = false;
                        }
                    }
                }
                Routed::Reset(g)
            }
            TrapEvent::Irq { reg, value } => {
                let slot = self.slot;
                note(env.gpu.with(|gpu, _| gpu.irq_write(slot, reg, value)));
                Routed::Irq
            }
            TrapEvent::Fence { index, value } => {
                // The fence's range in the guest's view, moved to the host.
                let host = self.fence_to_host(value);
                let accepted = host.is_some();
                let (slot, phys_index) = (self.slot, self.part.fence_base.saturating_add(index));
                env.gpu.with(|gpu, phys| {
                    if !accepted {
                        gpu.note_fence_refused(slot);
                    }
                    gpu.write_fence(phys, phys_index, host.unwrap_or(0));
                });
                Routed::Fence { index, accepted }
            }
            TrapEvent::Display { reg, value } => {
                self.counters.display_writes += 1;
                let de = match reg {
                    DisplayReg::DeImr => Some(GTIMR),
                    DisplayReg::DeIir => Some(GTIIR),
                    DisplayReg::DeIer => Some(GTIER),
                    DisplayReg::PlaneCtl => {
                        // The pipe runs while the plane is enabled: count up
                        // to now, then start or stop it.
                        let now = env.clock.now_ns();
                        note(self.vblank_tick(env, now));
                        self.vblank.set_running(now, regs::PlaneCtl(value).enable());
                        None
                    }
                    DisplayReg::PlaneSurf => {
                        self.vblank.flip(value, env.st.vregs);
                        None
                    }
                    DisplayReg::PlaneStride
                    | DisplayReg::PipeSrc
                    | DisplayReg::CursorCtl
                    | DisplayReg::CursorBase
                    | DisplayReg::CursorPos => None,
                };
                if let Some(off) = de {
                    let d = self.de.write(off, value).unwrap_or_default();
                    note(self.de_delivery(env, d));
                }
                Routed::Display(reg)
            }
            TrapEvent::PvInfo(p) => {
                self.counters.pvinfo_events += 1;
                Routed::PvInfo(p)
            }
        }
    }

    /// A fence (Intel gen6 layout: low dword bits 31:12 start and bit 0
    /// valid, high dword bits 31:12 last page) may only cover the vGPU's
    /// own graphics memory, one slice of its view: the value the physical
    /// fence gets (its range moved to the placement), or `None`.
    fn fence_to_host(&self, value: u64) -> Option<u64> {
        if self.view.is_identity() {
            // The paper's case: the guest's range is the host's.
            let start = value & 0xFFFF_F000;
            let last = ((value >> 32) & 0xFFFF_F000) | 0xFFF;
            let len = last.checked_sub(start).and_then(|l| l.checked_add(1));
            let ok = value & 1 == 0
                || len.is_some_and(|len| {
                    self.part.aperture.contains(start, len) || self.part.high.contains(start, len)
                });
            return ok.then_some(value);
        }
        self.view.fence_to_host(value)
    }

    /// A guest TAIL write: PPGTT sync for render, then the physical side.
    fn submit<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &mut self,
        env: &mut Env<'_, S>,
        e: EngineId,
        tail: u32,
    ) -> (SubmitOutcome, Delivery) {
        // A TAIL write to a disabled ring starts nothing (as on hardware:
        // drivers write TAIL while initialising the ring, before CTL).
        if !ring_regs(env.st.vregs, e).ctl.enable() {
            return (SubmitOutcome::Empty, Delivery::default());
        }
        let mut root = None;
        if e == EngineId::Rcs {
            if let Some(pd) = self.pd {
                // The sync pins guest tables and allocates/frees shadow
                // pages: outside the GPU lock, with this vGPU's render work
                // parked meanwhile.
                let slot = self.slot;
                env.gpu.with(|gpu, _| gpu.ppgtt_update_begin(slot));
                let sync = match env.st.tables(self.ggtt, self.ppgtt) {
                    (Ok(g), Ok(mut pp)) => {
                        let r = pp.sync(u64::from(pd), &g, env.guest, env.host, env.alloc);
                        // Re-shadowing is paid for by the guest that causes it.
                        let cost = pp.last_sync().cost_ns();
                        env.gpu.with(|gpu, _| gpu.charge_ppgtt(slot, cost));
                        self.ppgtt = pp.state();
                        r
                    }
                    (Err(_), _) => Err(PpgttError::BadStorage),
                    (_, Err(x)) => Err(x),
                };
                match sync {
                    Ok(r) => {
                        env.gpu.with(|gpu, _| gpu.ppgtt_update_end(slot, Some(r)));
                        root = Some(r);
                    }
                    Err(x) => {
                        // Whatever is left of the shadow is what the engine
                        // may use: never a freed root.
                        let left = self.ppgtt.shadow_root();
                        return env.gpu.with(|gpu, _| {
                            gpu.ppgtt_update_end(slot, left);
                            gpu.reject_ppgtt(slot, x)
                        });
                    }
                }
            } else {
                root = self.ppgtt.shadow_root();
            }
        }
        let dirty = self.ring_dirty.get(e.index()).copied().unwrap_or(false);
        let setup = if dirty {
            let r = ring_regs(env.st.vregs, e);
            Some(RingSetup {
                start: r.start,
                ctl: r.ctl.0,
                head: r.head,
            })
        } else {
            None
        };
        let slot = self.slot;
        let (o, d) = env
            .gpu
            .with(|gpu, phys| gpu.submit(phys, env.host, slot, e, setup, tail, root));
        if dirty && o != SubmitOutcome::Rejected(super::gpu::SubmitReject::RingBusy) {
            if let Some(x) = self.ring_dirty.get_mut(e.index()) {
                *x = false;
            }
        }
        (o, d)
    }

    /// The BAR2 range that may be mmapped (the sparse-mmap area): the
    /// aperture slice of the guest's view (its placement's unless it was
    /// migrated here from another placement).
    pub fn mmap_area(&self) -> GmRange {
        self.view.view().aperture
    }

    /// The guest's GM view of this vGPU ([`GmView`]).
    pub fn gm_view(&self) -> &GmView {
        &self.view
    }

    /// Let the guest see `view` of its graphics memory and PVINFO show it
    /// with id `vgt_id` (a migration target taking the source's view; the
    /// identity view of [`Vgpu::placement`] undoes it).  Only right after a
    /// [`Vgpu::reset`]: the GGTT must hold nothing and the rings be
    /// unprogrammed; `false` (nothing changed) otherwise.
    pub(crate) fn set_view<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &mut self,
        env: &mut Env<'_, S>,
        view: GmView,
        vgt_id: u32,
    ) -> bool {
        if view.host() != self.placement() {
            return false;
        }
        let v = view.view();
        let shown = Partition {
            aperture: v.aperture,
            high: v.high,
            ..self.part
        };
        let Ok(pv) = PvInfo::new(vgt_id, self.mmio.pvinfo().caps, &shown) else {
            return false;
        };
        let Ok(mut g) = env.st.ggtt(self.ggtt) else {
            return false;
        };
        if !g.set_view(&view) {
            return false;
        }
        self.ggtt = g.state();
        self.mmio.set_pvinfo(pv, env.st.vregs);
        self.view = view;
        let slot = self.slot;
        env.gpu.with(|gpu, _| gpu.set_gm_view(slot, Some(view)));
        true
    }

    /// The vGPU's host slices (its placement; the guest sees
    /// [`Vgpu::gm_view`]).
    pub fn placement(&self) -> VgpuGm {
        VgpuGm {
            aperture: self.part.aperture,
            high: self.part.high,
        }
    }

    /// Aperture fault (`vm_operations.fault` of the BAR2 mapping, and the
    /// region read/write path): the host page that aperture offset `offset`
    /// reaches, the same one the engine reaches for that graphics address.
    pub fn aperture_fault(
        &mut self,
        st: &mut VgpuStorage<'_>,
        offset: u64,
    ) -> Result<HostPage, ApertureError> {
        let g = st
            .ggtt(self.ggtt)
            .map_err(|_| ApertureError::OutsideSlice)?;
        aperture::fault(&g, offset)
    }

    /// VFIO `dma_unmap` of `[iova, iova + size)`: every GGTT and PPGTT entry
    /// mapping a frame in it drops its pin (GGTT entries go to scratch).
    /// Returns the entries evicted.
    pub fn dma_unmap<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &mut self,
        env: &mut Env<'_, S>,
        iova: u64,
        size: u64,
    ) -> u64 {
        let mut n = 0u64;
        if let Ok(mut g) = env.st.ggtt(self.ggtt) {
            n += g.dma_unmap(env.guest, &mut Locked::new(env.gpu), env.cpu, iova, size);
            self.ggtt = g.state();
        }
        if let Ok(mut pp) = env.st.ppgtt(self.ppgtt) {
            let slot = self.slot;
            env.gpu.with(|gpu, _| gpu.ppgtt_update_begin(slot));
            n += pp.dma_unmap(env.guest, env.host, env.alloc, iova, size);
            self.ppgtt = pp.state();
            let root = self.ppgtt.shadow_root();
            env.gpu.with(|gpu, _| gpu.ppgtt_update_end(slot, root));
        }
        n
    }

    /// The vGPU's own graphics memory slices as its guest sees them (the
    /// view: guest addresses in registers, the GGTT window, BAR2 and the
    /// display are in these terms).
    pub(crate) fn gm(&self) -> VgpuGm {
        self.view.view()
    }

    /// The primary plane as the guest has programmed it now (decoded from
    /// the vregs, [`display::decode`]), or why there is none.
    pub fn display_plane(&self, st: &VgpuStorage<'_>) -> Result<Plane, NoPlane> {
        display::decode_vregs(st.vregs, &self.gm())
    }

    /// Plane identities (the current id is the last QUERY_GFX_PLANE's).
    pub fn plane_ids(&self) -> &PlaneIds<PLANE_IDS> {
        &self.plane_ids
    }

    /// The plane the last QUERY_GFX_PLANE reported: what the display region
    /// maps until the next query (`None`: no plane; the region shows scratch).
    pub fn shown_plane(&self) -> Option<Plane> {
        self.plane_ids.lookup(self.plane_ids.current())
    }

    /// Size of the display region ([`display::display_region_size`]).
    pub fn display_region_size(&self) -> u64 {
        display::display_region_size(&self.gm())
    }

    /// `VFIO_DEVICE_QUERY_GFX_PLANE` ([`display::query_gfx_plane`]) with this
    /// vGPU's plane identities.  When `observed.changed`, the glue drops the
    /// display region's CPU mappings so the VMM faults in the new pages.
    ///
    /// A region query with `drm_plane_type` 0 asks for the primary plane:
    /// QEMU's region display path (`vfio_display_region_update`) never sets
    /// the plane type, and region planes are primary planes only (as in the
    /// kernel's `mdpy` sample).  dma-buf queries name the plane explicitly.
    pub fn query_gfx_plane(
        &mut self,
        st: &VgpuStorage<'_>,
        flags: u32,
        drm_plane_type: u32,
        caps: GfxCaps,
        region_index: u32,
    ) -> Result<QueryAnswer, InvalidQuery> {
        let gm = self.gm();
        if drm_plane_type == display::vfio::DRM_PLANE_TYPE_CURSOR
            && display::GfxQuery::from_flags(flags, caps)? == display::GfxQuery::DmaBuf
        {
            let r = |off: u32| {
                regs::fixed_vreg_index(PVINFO_BASE + off)
                    .and_then(|i| st.vregs.get(i))
                    .copied()
                    .unwrap_or(u32::MAX)
            };
            let hot = (r(vgtif::CURSOR_X_HOT), r(vgtif::CURSOR_Y_HOT));
            let primary = display::Observed {
                id: self.plane_ids.current(),
                changed: false,
            };
            return Ok(display::query_cursor(
                st.vregs,
                &gm,
                hot,
                &mut self.cursor_ids,
                primary,
            ));
        }
        let plane_type = if flags == display::vfio::VFIO_GFX_PLANE_TYPE_REGION
            && drm_plane_type == display::vfio::DRM_PLANE_TYPE_OVERLAY
        {
            display::vfio::DRM_PLANE_TYPE_PRIMARY
        } else {
            drm_plane_type
        };
        display::query_gfx_plane(
            flags,
            plane_type,
            caps,
            st.vregs,
            &gm,
            &mut self.plane_ids,
            region_index,
        )
    }

    /// Fault on the display region's mapping: the host page region page
    /// `page_index` maps now ([`display::region_fault`] of the shown plane
    /// through this vGPU's shadow GGTT); `None` past the region (SIGBUS).
    pub fn display_fault(&mut self, st: &mut VgpuStorage<'_>, page_index: u64) -> Option<HostPage> {
        let plane = self.shown_plane();
        let g = st.ggtt(self.ggtt).ok()?;
        display::region_fault(plane.as_ref(), &g, page_index)
    }

    /// A `read()` of the display region ([`display::region_read`]).
    pub fn display_read<H: HostMemory>(
        &mut self,
        st: &mut VgpuStorage<'_>,
        host: &H,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), MemError> {
        let plane = self.shown_plane();
        let g = st.ggtt(self.ggtt).map_err(|_| MemError::OutOfRange)?;
        display::region_read(plane.as_ref(), &g, host, offset, buf)
    }

    /// The plane a `VFIO_DEVICE_GET_GFX_DMABUF` argument names (an id
    /// QUERY_GFX_PLANE handed out and that is still remembered).
    pub fn dmabuf_plane(&self, id: u32) -> Option<Plane> {
        if id & display::CURSOR_ID_BIT != 0 {
            self.cursor_ids.lookup(id & !display::CURSOR_ID_BIT)
        } else {
            self.plane_ids.lookup(id)
        }
    }

    /// The framebuffer page list of `plane` ([`display::framebuffer_pages`]
    /// through this vGPU's shadow GGTT) into `out` (room for
    /// [`Plane::pages`] entries; a shorter `out` gets the first pages);
    /// returns how many were written.  Refused for
    /// a plane outside this vGPU's slices.  The pages stay valid only while
    /// the caller holds the vGPU's lock: take a reference on each before
    /// dropping it.
    pub fn framebuffer_pages(
        &mut self,
        st: &mut VgpuStorage<'_>,
        plane: &Plane,
        out: &mut [HostPage],
    ) -> Result<usize, NoPlane> {
        let outside = NoPlane::SurfaceOutsideGm {
            surface: plane.surface(),
            size: plane.size(),
        };
        let g = st.ggtt(self.ggtt).map_err(|_| outside)?;
        let pages = display::framebuffer_pages(plane, &g)?;
        let mut n = 0;
        for (slot, page) in out.iter_mut().zip(pages) {
            *slot = page;
            n += 1;
        }
        Ok(n)
    }

    /// A display-engine [`Delivery`] as the vGPU's one interrupt line sees
    /// it: the line stays up while the GT block still asserts it.
    fn de_delivery<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &self,
        env: &mut Env<'_, S>,
        d: Delivery,
    ) -> Delivery {
        if d.intx != Some(false) {
            return d;
        }
        let slot = self.slot;
        let gt = env
            .gpu
            .with(|gpu, _| gpu.irq(slot).is_some_and(|i| i.asserted()));
        Delivery {
            msi: d.msi,
            intx: if d.intx == Some(false) && gt {
                None
            } else {
                d.intx
            },
        }
    }

    /// Bring pipe A's frame counter up to `now_ns` (the vblank timer, and a
    /// guest read of the counters); new vblanks latch the vblank interrupt
    /// (unless masked): signal the returned [`Delivery`].
    pub fn vblank_tick<const N: usize, S: Services<Gpu = Gpu<N>>>(
        &mut self,
        env: &mut Env<'_, S>,
        now_ns: u64,
    ) -> Delivery {
        if self.vblank.tick(now_ns, env.st.vregs) == 0 {
            return Delivery::default();
        }
        self.counters.vblanks += 1;
        let d = self.de.raise(DE_PIPEA_VBLANK);
        self.de_delivery(env, d)
    }

    /// Whether the vblank timer is wanted at all (the vblank interrupt
    /// enabled and unmasked, the pipe running): a caller that would read the
    /// clock only for [`Vgpu::vblank_deadline`] asks this first.
    pub fn vblank_wanted(&self) -> bool {
        self.de.ier() & DE_PIPEA_VBLANK != 0
            && self.de.imr() & DE_PIPEA_VBLANK == 0
            && self.vblank.running()
    }

    /// When the vblank timer must next run for this vGPU: the next vblank,
    /// if the pipe runs and the guest enabled and unmasked the vblank
    /// interrupt; `None` otherwise (then nothing needs a timer: the counter
    /// is brought up to date when the guest reads it).
    pub fn vblank_deadline(&self, now_ns: u64) -> Option<u64> {
        if self.vblank_wanted() {
            Some(self.vblank.next_vblank_ns(now_ns))
        } else {
            None
        }
    }

    /// The monitor's frame time changed (a new EDID mode): the vblank
    /// period follows from `now_ns`.
    pub fn set_refresh_period(&mut self, now_ns: u64, period_ns: u64) {
        self.vblank.set_period(now_ns, period_ns);
    }

    /// Pipe A's vblank model.
    pub fn vblank(&self) -> &Vblank {
        &self.vblank
    }

    /// Turn a [`Delivery`] from the engine worker (or a trap) into what the
    /// glue signals, per the guest's PCI configuration: MSI when enabled,
    /// else the INTx level (also shown in the status register) unless the
    /// command register disables INTx.
    pub fn signal(&mut self, d: Delivery) -> Signal {
        // One line for both blocks: a GT block that drops it does not lower
        // it while the display block still asserts it.
        let d = if d.intx == Some(false) && self.de.asserted() {
            Delivery { intx: None, ..d }
        } else {
            d
        };
        if self.cfg.msi().enabled {
            return Signal {
                msi: d.msi,
                intx: None,
            };
        }
        if let Some(level) = d.intx {
            self.cfg.set_interrupt_status(level);
            if self.cfg.intx_disabled() {
                return Signal::default();
            }
        }
        Signal {
            msi: false,
            intx: d.intx,
        }
    }

    /// The host memory this vGPU holds now ([`VgpuMemory`]).
    pub fn host_memory(&self) -> VgpuMemory {
        VgpuMemory {
            ppgtt_tables: self.ppgtt.host_pages() as u64 * super::mem::PAGE_SIZE,
            ..VgpuMemory::of::<P>(&self.part)
        }
    }

    /// Human-readable counters for sysfs (`gvt/stats`).
    pub fn write_stats<W: fmt::Write, const N: usize>(
        &self,
        gpu: &Gpu<N>,
        w: &mut W,
    ) -> fmt::Result {
        let t = self.mmio.stats();
        writeln!(w, "traps_pm {}", t.pm)?;
        writeln!(w, "traps_tail {}", t.tail)?;
        writeln!(w, "traps_pte {}", t.pte)?;
        writeln!(w, "traps_other {}", t.other)?;
        writeln!(w, "mmio_rejected {}", t.rejected)?;
        writeln!(w, "cfg_reads {}", self.counters.cfg_reads)?;
        writeln!(w, "cfg_writes {}", self.counters.cfg_writes)?;
        writeln!(w, "cfg_rejected {}", self.counters.cfg_rejected)?;
        writeln!(w, "resets {}", self.counters.resets)?;
        let g = self.ggtt.stats();
        writeln!(w, "ggtt_mapped {}", self.ggtt.mapped_entries())?;
        writeln!(
            w,
            "ggtt_rejected {}",
            g.reject_frame_not_mapped
                .saturating_add(g.reject_pin_refused)
        )?;
        writeln!(w, "ggtt_dropped {}", g.dropped_out_of_slice)?;
        writeln!(w, "ppgtt_pinned {}", self.ppgtt.pinned_pages())?;
        writeln!(w, "vblank_frames {}", self.vblank.frames_at(0))?;
        writeln!(w, "vblank_ticks {}", self.counters.vblanks)?;
        writeln!(w, "flips {}", self.vblank.flips())?;
        if let Some(s) = gpu.slot_stats(self.slot) {
            writeln!(w, "submissions_accepted {}", s.accepted)?;
            writeln!(w, "submissions_held {}", s.held)?;
            writeln!(w, "submissions_rejected {}", s.rejected.total())?;
            writeln!(w, "engine_faults {}", s.faults)?;
        }
        if let Some(s) = gpu.scheduler().stats(self.slot) {
            s.format(w)?;
        }
        Ok(())
    }
}
