// SPDX-License-Identifier: GPL-2.0
//! One vGPU as an mdev device ([`MdevVgpu`]; the core's `vgpu::Vgpu` is
//! its mediated state, inside): its state, its locks, its lifecycle
//! (create, release, open, close, request, dma_unmap, reset) and its
//! interrupt lines.  [`crate::ops`] says which file implements each VFIO
//! callback: [`crate::region`] (read/write of every region, region info),
//! [`crate::ioctl`], [`crate::mmap`] (mmap and the fault handlers),
//! [`crate::sysfs`]; what a trap leaves to do after its locks are dropped
//! (signal, zap, kick, vblank, as [`crate::effects::Effects`]) is applied
//! in one place, [`MdevVgpu::apply`].  It reaches the C side only through
//! [`crate::vfio_dev`] and [`crate::kapi`], and the parent's shared side
//! ([`crate::shared::Shared`]: the GPU lock, partitions, slot table,
//! workers) through the reference it holds.
//!
//! Region layout (vfio-pci convention): region `i` starts at file offset
//! `i << 40`.  After the nine PCI regions come the EDID region (index 9,
//! `VFIO_REGION_TYPE_GFX`/`VFIO_REGION_SUBTYPE_GFX_EDID`, mirrored into the
//! guest's EDID page in BAR0) and the display region (index 10, read-only,
//! mmap-able: the pages of the plane the last `VFIO_DEVICE_QUERY_GFX_PLANE`
//! reported).
//!
//! # Locks (isolation under a hostile tenant)
//!
//! The rule: **no lock shared by all vGPUs is held across work a guest
//! sizes, across pinning, or across anything that can fault into another
//! device.**
//!
//! | lock | protects | taken after | may sleep under it on |
//! |---|---|---|---|
//! | `MdevVgpu::mig` (one per vGPU) | the VFIO migration FSM state and its data files ([`crate::mig_state`], arcs in [`crate::migration`]) | nothing | `state` (drain, save, restore), `kvzalloc`, `anon_inode_getfile`, `fput`, sleeping while the engines drain; never a user copy (the data files copy under their own mutex, no vGPU lock) |
//! | `MdevVgpu::state` (one per vGPU) | the core vGPU, vregs, shadow GGTT/PPGTT storage, EDID | nothing, or `mig` | `vfio_pin_pages`/`unpin` (GUP: faults, possibly into *another* vGPU's aperture, the VMM's mm lock, VFIO's container lock), PPGTT shadowing, `GFP_KERNEL` |
//! | `MdevVgpu::map` (one per vGPU) | what the aperture and display mappings show; orders a zap against a fault | `state` | `unmap_mapping_range`, `vmf_insert_pfn`; never pins, never faults on user memory |
//! | `Shared::gpu` (the GPU lock, one per parent) | the mediated GPU (engines, scheduler, slots) and the physical GGTT | `state` or `map` (taken by the core through `GpuLock` for bounded sections only) | nothing: one bounded engine step, one audit within the limits, a register, one GGTT store |
//! | `MdevVgpu::irqs` | eventfds, INTx mask | anything | `eventfd_signal` |
//! | `Shared::slots` | slot -> live vGPU | nothing (workers) | nothing: queues work, try-locks |
//! | `Shared::partitions` | partitions and ids | nothing | nothing |
//! | `Shared::vgpus` (an atomic count, no lock) | vGPUs whose data exists: the parent waits for 0 before it goes | nothing | nothing |
//! | `Shared::invalidating` (the registry's lock) | DMA ranges being unmapped | nothing (`dma_unmap`, before `state`), or `state` (a pin checks its frame, only while a range is being unmapped) | nothing |
//! | the C work item's spinlock (`kapi::CWork::arm`) | the vblank timer's armed deadline | nothing (effects are applied with every lock dropped) | nothing (irqs off) |
//!
//! Why it holds: a fault handler takes only `map` and then `gpu`, and
//! neither is ever held across a pin, so a pin of vGPU A that faults into
//! vGPU B's aperture (the VMM DMA-mapped B's BAR2) completes whatever B's
//! holders do; the engine worker holds `gpu` for one bounded step and
//! hands interrupts to a per-vGPU work item, so a vGPU whose `state` is held
//! by a slow pin (userfaultfd-backed RAM) delays only itself; the vblank
//! timer only try-locks `state`.  Traps of different vGPUs touch only their
//! own `state`; plain register reads never take `gpu`.
//!
//! Every user mapping of guest memory (aperture, display region, dma-buf) is
//! a PFN mapping (`VM_PFNMAP`, `vmf_insert_pfn`): the frames are the VMM's
//! anonymous or shmem RAM, never pages of the device file.  The PTEs hold no
//! reference: the core rewrites a physical GGTT entry, then zaps the CPU
//! mappings of it under `map` ([`KCpu`]), then unpins the old page, and a
//! fault reads the entry and inserts it under `map`; so no mapping outlives
//! the pin of the page it shows.  Never touch user memory while holding
//! `state` (a user buffer may be this vGPU's own aperture mapping).
//!
//! The command register is honoured the way vfio-pci honours it on real
//! devices: with memory decode off, BAR region reads/writes fail with EIO,
//! aperture faults raise SIGBUS, and turning decode off (or a reset) zaps
//! every aperture mapping so the next CPU access faults and is checked
//! again.  INTx follows `linux/vfio.h`: maskable, automasked after it fires,
//! never raised while the guest set `INTX_DISABLE`; mask/unmask also work
//! through eventfds (vfio's virqfd, as QEMU's KVM resamplefd path uses).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use kernel::new_mutex;
use kernel::page::Page;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex, SetOnce};

use crate::dmabuf::DmaBufAccount;
use crate::effects::Effects;
use crate::gvt_core::display::NoPlane;
use crate::gvt_core::edid::EdidRegion;
use crate::gvt_core::gpu::SHADOW_PAGES_PER_VGPU;
use crate::gvt_core::irq::Delivery;
use crate::gvt_core::mem::{Gfn, GmRange, HostPage, MemError, PAGE_SIZE};
use crate::gvt_core::partition::{Partition, PartitionId};
use crate::gvt_core::ratelimit::RateLimit;
use crate::gvt_core::sched::SlotId;
use crate::gvt_core::services::{CpuMappings, GuestMemory};
use crate::gvt_core::vblank::DEFAULT_PERIOD_NS;
use crate::gvt_core::vgpu::{
    storage_sizes, Env, Vgpu as CoreVgpu, VgpuMemory, VgpuParams, VgpuStorage, DEFAULT_PPGTT_TABLES,
};
use crate::gvt_core::vgpu_types::{Resolution, VgpuType};
use crate::invalidate::Registry;
use crate::kapi::{
    self, CWork, EventFd, KAlloc, KClock, KHost, Shown, VirqfdHandler, VirqfdSlot, WorkHandler,
};
use crate::shared::{KGpu, MediatedGpu, Shared, SlotVgpu};
use crate::vfio;
use crate::vfio_dev::VfioDevice;

/// The kernel's services of one call into the core
/// (`gvt_core::services::Services`).
pub(crate) type KServices<'a> = (KGpu<'a>, KHost, KAlloc, KClock, KGuest<'a>, KCpu<'a>);

/// One call's `Env`: storage `$st`, the GPU lock of `$gpu` (vGPU `$v`'s
/// shared GPU by default) and the kernel services of vGPU `$v`.
macro_rules! env {
    ($v:expr, $st:expr) => {
        env!($v, $st, &$v.shared.gpu)
    };
    ($v:expr, $st:expr, $gpu:expr) => {
        crate::gvt_core::vgpu::Env::<crate::mdev::KServices<'_>> {
            st: $st,
            gpu: &mut crate::shared::KGpu($gpu),
            host: &mut crate::kapi::KHost,
            alloc: &mut crate::kapi::KAlloc,
            clock: &crate::kapi::KClock,
            guest: &mut crate::mdev::KGuest {
                dev: $v.dev,
                invalidating: &$v.shared.invalidating,
            },
            cpu: &mut crate::mdev::KCpu(Some($v)),
        }
    };
}
pub(crate) use env;

pub(crate) const REGION_SHIFT: u32 = 40;
pub(crate) const PAGE_SHIFT: u32 = 12;
pub(crate) const REGION_MASK: u64 = (1u64 << REGION_SHIFT) - 1;
pub(crate) const BAR0: u32 = vfio::VFIO_PCI_BAR0_REGION_INDEX;
pub(crate) const BAR2: u32 = vfio::VFIO_PCI_BAR2_REGION_INDEX;
pub(crate) const CONFIG: u32 = vfio::VFIO_PCI_CONFIG_REGION_INDEX;
pub(crate) const NUM_REGIONS: u32 = vfio::VFIO_PCI_NUM_REGIONS;
/// The EDID region (`VFIO_REGION_TYPE_GFX` / `VFIO_REGION_SUBTYPE_GFX_EDID`).
pub(crate) const EDID_REGION: u32 = NUM_REGIONS;
/// The display region: the current primary plane's pages (region planes).
pub(crate) const DISPLAY_REGION: u32 = NUM_REGIONS + 1;
/// Regions in `VFIO_DEVICE_GET_INFO`: the PCI ones, then EDID and display.
pub(crate) const ALL_REGIONS: u32 = NUM_REGIONS + 2;
pub(crate) const NUM_IRQS: u32 = vfio::VFIO_PCI_NUM_IRQS;
pub(crate) const INTX: u32 = vfio::VFIO_PCI_INTX_IRQ_INDEX;

/// Interrupt eventfds the VMM wired with `VFIO_DEVICE_SET_IRQS`.
pub(crate) struct Irqs {
    ctx: [Option<EventFd>; NUM_IRQS as usize],
    intx_masked: bool,
}

pub(crate) struct State {
    /// The mediator's view of this vGPU; `None` once destroyed (release).
    /// Boxed (3 KiB): `MdevVgpu::create` runs deep in the mdev create path, on a
    /// 16 KiB kernel stack.
    pub(crate) core: Option<KBox<CoreVgpu>>,
    /// Virtual registers: the sparse file (`regs::VREG_DWORDS`, 114 KiB;
    /// GVT-g's vreg is 2 MiB).
    vregs: KVVec<u32>,
    /// What the guest wrote in its GGTT slices, and the physical entries.
    ggtt_guest: KVVec<u64>,
    ggtt_shadow: KVVec<u64>,
    /// The shadow PPGTT's snapshot of the guest tables.
    ppgtt_snap: KVVec<u64>,
    /// Where unmapped GGTT entries of this vGPU point (owned here, freed
    /// after the core has unmapped it; scrubbed whenever the vGPU changes
    /// hands, see [`MdevVgpu::reset`]).
    scratch: Page,
    /// Host-owned pages of its shadow rings and batches (owned here, as above).
    #[allow(dead_code)]
    shadow: KVec<Page>,
    /// The VMM's EDID region and the monitor it defines (mirrored into the
    /// vregs' guest EDID page at creation, on hotplug and after reset).
    /// Boxed: 1 KiB that would otherwise sit in `MdevVgpu::new`'s stack frame.
    pub(crate) edid: KBox<EdidRegion>,
    /// Why the last primary-plane query found no plane (logged on change).
    pub(crate) no_plane: Option<NoPlane>,
    /// The migration stream being saved in PRE_COPY (its initial part and
    /// rounds so far); under this lock, as the rounds are written from the
    /// data file's `VFIO_MIG_GET_PRECOPY_INFO` (no `mig` lock there).
    pub(crate) pre: crate::gvt_core::vgpu_migrate::Precopy,
}

impl State {
    /// The core vGPU and its storage, lent together.
    pub(crate) fn split(&mut self) -> Result<(&mut CoreVgpu, VgpuStorage<'_>)> {
        let core = self.core.as_deref_mut().ok_or(ENODEV)?;
        Ok((
            core,
            VgpuStorage {
                vregs: &mut self.vregs,
                ggtt_guest: &mut self.ggtt_guest,
                ggtt_shadow: &mut self.ggtt_shadow,
                ppgtt_snap: &mut self.ppgtt_snap,
            },
        ))
    }

    /// The storage alone (the core taken out for `destroy`).
    fn storage(&mut self) -> VgpuStorage<'_> {
        VgpuStorage {
            vregs: &mut self.vregs,
            ggtt_guest: &mut self.ggtt_guest,
            ggtt_shadow: &mut self.ggtt_shadow,
            ppgtt_snap: &mut self.ppgtt_snap,
        }
    }

    /// The host memory this vGPU holds now, measured from what was
    /// allocated (sysfs `gvt/stats`): the storage lent to the core, the
    /// shadow and scratch pages, the core's lazily allocated shadow PPGTT
    /// tables, and the vGPU's own structures.
    pub(crate) fn host_memory(&self) -> VgpuMemory {
        let page = PAGE_SIZE;
        let tables = self
            .core
            .as_deref()
            .map_or(0, |c| c.host_memory().ppgtt_tables);
        VgpuMemory {
            vregs: (self.vregs.capacity() * 4) as u64,
            ggtt: ((self.ggtt_guest.capacity() + self.ggtt_shadow.capacity()) * 8) as u64,
            ppgtt_snapshot: (self.ppgtt_snap.capacity() * 8) as u64,
            ppgtt_tables: tables,
            shadow: (self.shadow.len() as u64 + 1) * page,
            state: (core::mem::size_of::<MdevVgpu>()
                + core::mem::size_of::<CoreVgpu>()
                + core::mem::size_of::<EdidRegion>()) as u64,
        }
    }

    pub(crate) fn core(&self) -> Result<&CoreVgpu> {
        self.core.as_deref().ok_or(ENODEV)
    }

    /// Show the monitor to the guest (its EDID page in BAR0).
    pub(crate) fn mirror_edid(&mut self) {
        self.edid.mirror_into(&mut self.vregs);
    }
}

/// The display region's plane as its fault handler needs it: the GGTT
/// entries it shows (`map` lock).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShownPlane {
    /// First GGTT index of the surface, as the guest addresses it (its GM
    /// view: what `CpuMappings::entry_changed` reports).
    pub(crate) first: u64,
    /// The physical GGTT entry behind `first` (the same index unless the
    /// guest's view was moved by a migration; the plane lies in one slice,
    /// so the pages follow on).
    pub(crate) phys_first: u64,
    /// Pages of the plane; region pages past them show scratch.
    pub(crate) pages: u64,
}

/// What the `map` lock protects (see the lock table).
pub(crate) struct MapState {
    /// The plane the display region shows, `None`: scratch only.
    pub(crate) shown: Option<ShownPlane>,
}

/// Pending deliveries of the engine worker (bits of [`MdevVgpu::pending`]).
const PEND_MSI: u32 = 1;
const PEND_INTX: u32 = 2;
const PEND_INTX_HIGH: u32 = 4;

/// One vGPU: the mdev device's data (see the module documentation).
#[pin_data]
pub(crate) struct MdevVgpu {
    /// Our VFIO device (pins, mapping invalidation).
    pub(crate) dev: VfioDevice,
    /// What it shares with the other vGPUs of its parent (which outlives it).
    pub(crate) shared: &'static Shared<MdevVgpu>,
    /// The scheduler slot of the mediated GPU.
    pub(crate) slot: SlotId,
    pub(crate) id: u32,
    pid: PartitionId,
    pub(crate) part: Partition,
    #[allow(dead_code)]
    type_idx: usize,
    /// The type's sysfs name (the migration stream's identity).
    type_name: [u8; 32],
    type_name_len: usize,
    /// The type's resolution: the default monitor's mode and the largest
    /// the VMM may set through the EDID region.
    resolution: Resolution,
    /// This vGPU's scratch page (constant while it lives).
    pub(crate) scratch_pfn: u64,
    /// Size of the display region (constant: it follows the slices).
    pub(crate) display_size: u64,
    /// Memory decode of the guest's command register, mirrored here (under
    /// `state`, read by the fault handlers, which do not take `state`).
    pub(crate) decode: AtomicBool,
    /// Aperture accesses outside this vGPU's slice (reads 0, writes dropped).
    pub(crate) ballooned: AtomicU64,
    /// Base of the aperture slice of the guest's GM view (BAR2 offsets the
    /// guest uses): `part.aperture.base` unless a migration stream from
    /// another placement was restored ([`MdevVgpu::sync_view`]).  Read by
    /// the fault handler, which must not take `state`.
    pub(crate) aperture_view: AtomicU64,
    /// The VMM was told (ERR, else REQ irq) that this vGPU failed; cleared
    /// on reset.
    failed_told: AtomicBool,
    /// The task that is inside `bar0_write` (which may pin guest pages),
    /// or 0.  A guest can point a GGTT entry at the VMM's own mapping of
    /// this vGPU's aperture: the handler refuses that fault (SIGBUS: the
    /// pin fails, the PTE goes to scratch) rather than map a page into
    /// its own pin.
    pub(crate) pinning: AtomicUsize,
    /// Faults refused by the `pinning` guard (sysfs `gvt/stats`
    /// `self_map_faults`).
    pub(crate) self_faults: AtomicU64,
    /// dma-buf planes offered (sysfs `gvt/dmabuf`; initially the module
    /// parameter `dmabuf`, 0 by default).  QEMU takes dma-buf planes
    /// whenever the probe says they exist, and then refuses to start
    /// without an OpenGL display ("opengl not available"): off by default,
    /// `display=on` works with any VMM display (KubeVirt's and libvirt's
    /// defaults: VNC, `ramfb=on`, no GL) through the display region; a
    /// VMM with GL opts in per vGPU (`gvtctl create --display dmabuf`, an
    /// mdevctl attribute) or host-wide (`dmabuf=1`).
    pub(crate) dmabuf: AtomicBool,
    /// dma-buf fds handed out by `VFIO_DEVICE_GET_GFX_DMABUF` (sysfs
    /// `gvt/display`: shows which display path the VMM took).
    pub(crate) dmabufs_exported: AtomicU64,
    /// Live dma-bufs, the pages they hold, their CPU faults (sysfs
    /// `gvt/display`).  Shared with each buffer, which may outlive the vGPU.
    pub(crate) dmabuf_account: Arc<DmaBufAccount>,
    /// Interrupts the engine worker raised, not yet delivered (`PEND_*`).
    pending: AtomicU32,
    /// The work item that delivers them (under `state`, off the worker);
    /// set once at creation, cancelled at release.
    work: SetOnce<CWork>,
    /// The VFIO migration FSM ([`crate::migration`]; taken before `state`).
    #[pin]
    pub(crate) mig: Mutex<crate::mig_state::Mig>,
    #[pin]
    pub(crate) state: Mutex<State>,
    #[pin]
    pub(crate) map: Mutex<MapState>,
    #[pin]
    irqs: Mutex<Irqs>,
    /// Rate limit of the log lines a guest or VMM can trigger (leaf lock).
    #[pin]
    log: Mutex<RateLimit>,
    /// INTx mask (0) and unmask (1) irqfds.
    virqfd: [VirqfdSlot; 2],
    /// Serialises virqfd enable/disable.
    #[pin]
    virqfd_lock: Mutex<()>,
}

pub(crate) const VIRQFD_MASK: usize = 0;
pub(crate) const VIRQFD_UNMASK: usize = 1;

impl SlotVgpu for MdevVgpu {
    fn deliver(&self, d: Delivery) {
        MdevVgpu::deliver(self, d)
    }
    fn failed(&self) {
        MdevVgpu::failed(self)
    }
    fn vblank_tick(&self, now: u64) -> Option<u64> {
        MdevVgpu::vblank_tick(self, now)
    }
}

/// The work item: signal what [`MdevVgpu::deliver`] noted.
impl WorkHandler<0> for MdevVgpu {
    fn run(&self) {
        self.run_deliveries();
    }
}

/// virqfd callbacks (process context, from vfio's workqueue).
impl VirqfdHandler<VIRQFD_MASK> for MdevVgpu {
    fn virqfd(&self) {
        self.set_intx_mask(true);
    }
}

impl VirqfdHandler<VIRQFD_UNMASK> for MdevVgpu {
    fn virqfd(&self) {
        self.set_intx_mask(false);
    }
}

impl MdevVgpu {
    /// The vGPU passed its hang threshold and is failed (submissions
    /// refused until a reset): tell the VMM, once, through the ERR irq (as
    /// vfio-pci reports an unrecoverable device error: QEMU stops the VM);
    /// a VMM that wired no ERR eventfd is asked through the REQ irq to
    /// release the device instead.
    pub(crate) fn failed(&self) {
        if !self.failed_told.swap(true, Ordering::Relaxed) {
            let err = vfio::VFIO_PCI_ERR_IRQ_INDEX;
            if self.wired(err) {
                pr_warn!(
                    "vGPU {}: too many GPU hangs, failed until reset; signalling the VMM's error eventfd\n",
                    self.id
                );
                self.raise(err);
            } else {
                pr_warn!(
                    "vGPU {}: too many GPU hangs, failed until reset; asking the VMM to release it\n",
                    self.id
                );
                self.raise(vfio::VFIO_PCI_REQ_IRQ_INDEX);
            }
        }
    }

    /// Whether the VMM wired an eventfd to interrupt `index`.
    fn wired(&self, index: u32) -> bool {
        matches!(self.irqs.lock().ctx.get(index as usize), Some(Some(_)))
    }

    /// The engine worker raised `d` for this vGPU: note it and let this
    /// vGPU's work item deliver it (it needs `state`, which a slow pin of
    /// this vGPU may hold; the worker must not wait for that).
    pub(crate) fn deliver(&self, d: Delivery) {
        let mut bits = if d.msi { PEND_MSI } else { 0 };
        match d.intx {
            Some(true) => bits |= PEND_INTX | PEND_INTX_HIGH,
            Some(false) => {
                bits |= PEND_INTX;
                self.pending.fetch_and(!PEND_INTX_HIGH, Ordering::AcqRel);
            }
            None => {}
        }
        if bits == 0 {
            return;
        }
        self.pending.fetch_or(bits, Ordering::AcqRel);
        if let Some(w) = self.work.as_ref() {
            w.queue();
        }
    }

    /// The work item: signal what [`MdevVgpu::deliver`] noted, as the guest's
    /// config space says (MSI or INTx).
    fn run_deliveries(&self) {
        let bits = self.pending.swap(0, Ordering::AcqRel);
        if bits == 0 {
            return;
        }
        let d = Delivery {
            msi: bits & PEND_MSI != 0,
            intx: (bits & PEND_INTX != 0).then_some(bits & PEND_INTX_HIGH != 0),
        };
        let sig = match self.state.lock().core.as_mut() {
            Some(core) => core.signal(d),
            None => return,
        };
        self.apply(Effects {
            sig,
            ..Effects::default()
        });
    }

    /// The vblank timer at `now`: bring the frame counter up to date and
    /// signal the vblank interrupt if it latched.  Returns when this vGPU
    /// next wants the timer (None: it does not).  Only try-locks `state`
    /// (shared timer): a busy vGPU is retried a millisecond later, and a
    /// guest reading its counters brings them up to date anyway.
    pub(crate) fn vblank_tick(&self, now: u64) -> Option<u64> {
        let Some(mut st) = self.state.try_lock() else {
            return Some(now.saturating_add(1_000_000));
        };
        let Ok((core, storage)) = st.split() else {
            return None;
        };
        let d = core.vblank_tick(&mut env!(self, storage), now);
        let next = core.vblank_deadline(now);
        let sig = core.signal(d);
        drop(st);
        self.apply(Effects {
            sig,
            ..Effects::default()
        });
        next
    }

    /// The vblank period follows the monitor's mode (open, hotplug); called
    /// with the state lock held.
    pub(crate) fn apply_refresh(st: &mut State) {
        let period = st
            .edid
            .mode()
            .and_then(|m| m.frame_period_ns())
            .unwrap_or(DEFAULT_PERIOD_NS);
        if let Some(core) = st.core.as_mut() {
            core.set_refresh_period(kapi::now_ns(), period);
        }
    }

    /// The device raises interrupt `index` (or the VMM loops one back with
    /// `SET_IRQS` `ACTION_TRIGGER`).  INTx is level-triggered and automasked:
    /// it is not raised while masked or while the guest's command register
    /// has `INTX_DISABLE`, and raising it masks it until the VMM unmasks.
    pub(crate) fn signal(&self, index: u32) {
        if index == INTX
            && self
                .state
                .lock()
                .core()
                .map_or(true, |c| c.cfg().intx_disabled())
        {
            return;
        }
        self.raise(index);
    }

    /// [`MdevVgpu::signal`] for an interrupt the core already decided on
    /// (`CoreVgpu::signal` applied the guest's config space under `state`):
    /// takes only `irqs`, so the shared timers and workers that raise it
    /// never wait for a vGPU's `state`.
    pub(crate) fn raise(&self, index: u32) {
        let mut irqs = self.irqs.lock();
        if index == INTX {
            if irqs.intx_masked {
                return;
            }
            irqs.intx_masked = true;
        }
        if let Some(Some(ctx)) = irqs.ctx.get(index as usize) {
            ctx.signal();
        }
    }

    /// Wire (`Some`) or unwire interrupt `index`'s eventfd; the old one (or
    /// `ctx` for an index out of range) is put.
    pub(crate) fn set_eventfd(&self, index: u32, ctx: Option<EventFd>) {
        let mut irqs = self.irqs.lock();
        if index == INTX {
            // A new (or no) trigger starts unmasked, as in vfio-pci.
            irqs.intx_masked = false;
        }
        if let Some(slot) = irqs.ctx.get_mut(index as usize) {
            let old = core::mem::replace(slot, ctx);
            drop(old);
        } else {
            drop(ctx);
        }
    }

    /// Bind (fd >= 0) or unbind (fd < 0) the INTx mask/unmask irqfd `which`.
    pub(crate) fn set_virqfd(&self, which: usize, fd: i32) -> Result {
        let Some(slot) = self.virqfd.get(which) else {
            return Err(EINVAL);
        };
        let _guard = self.virqfd_lock.lock();
        if fd < 0 {
            slot.disable();
            return Ok(());
        }
        // SAFETY: `self` outlives the irqfd: `disable_irqs` (close and
        // release) disables it, which waits for a running callback;
        // `virqfd_lock` serialises enable and disable.
        unsafe {
            if which == VIRQFD_MASK {
                slot.enable::<VIRQFD_MASK, Self>(self, fd)
            } else {
                slot.enable::<VIRQFD_UNMASK, Self>(self, fd)
            }
        }
    }

    /// Log a line a guest or a VMM can cause, rate-limited per vGPU
    /// (`gvt_core::ratelimit`): a loop cannot flood the kernel log.
    pub(crate) fn log_limited(&self, msg: core::fmt::Arguments<'_>) {
        let pass = self.log.lock().check(kapi::now_ns());
        match pass {
            Some(0) => pr_info!("vGPU {}: {}\n", self.id, msg),
            Some(n) => pr_info!("vGPU {}: {} ({n} similar lines suppressed)\n", self.id, msg),
            None => {}
        }
    }

    pub(crate) fn dmabuf(&self) -> bool {
        self.dmabuf.load(Ordering::Relaxed)
    }

    pub(crate) fn set_intx_mask(&self, masked: bool) {
        self.irqs.lock().intx_masked = masked;
    }

    fn disable_irqs(&self) {
        for which in [VIRQFD_MASK, VIRQFD_UNMASK] {
            let _ = self.set_virqfd(which, -1);
        }
        for i in 0..NUM_IRQS {
            self.set_eventfd(i, None);
        }
        self.irqs.lock().intx_masked = false;
    }

    /// Zap every CPU mapping of the aperture region (BAR2), so the next
    /// access faults and is checked again (memory decode off, reset).
    pub(crate) fn zap_aperture(&self) {
        let _m = self.map.lock();
        self.dev
            .zap(u64::from(BAR2) << REGION_SHIFT, 1u64 << REGION_SHIFT);
    }

    /// The BAR2 range the guest's view gives it (its aperture slice, or the
    /// source's after a migration from another placement).
    pub(crate) fn aperture_view(&self) -> GmRange {
        GmRange::new(
            self.aperture_view.load(Ordering::Acquire),
            self.part.aperture.size,
        )
    }

    /// The physical GGTT entry behind BAR2 offset `off` of the guest's view
    /// (`None` outside it): the same constant offset the core's GM view
    /// applies.
    pub(crate) fn aperture_host_index(&self, off: u64) -> Option<u64> {
        let view = self.aperture_view();
        if !view.contains(off, 0) {
            return None;
        }
        Some((off - view.base + self.part.aperture.base) >> PAGE_SHIFT)
    }

    /// Publish the core's GM view to the fault path (after a restore or a
    /// reset, under `state`) and drop every BAR2 mapping made under the old
    /// one.
    pub(crate) fn sync_view(&self, core: &CoreVgpu) {
        let base = core.mmap_area().base;
        if self.aperture_view.swap(base, Ordering::AcqRel) != base {
            self.zap_aperture();
            // The shown plane's physical pages were found through the old
            // view: the VMM queries the plane again.
            self.show_plane(None);
        }
    }

    /// Zap one aperture page's mappings (a GGTT entry of the slice changed).
    pub(crate) fn zap_aperture_page(&self, index: u64) {
        let _m = self.map.lock();
        self.dev.zap(
            (u64::from(BAR2) << REGION_SHIFT) + (index << PAGE_SHIFT),
            PAGE_SIZE,
        );
    }

    /// The display region shows `plane` from now on (a query changed it, or
    /// a reset took it away): the old pages leave every mapping.
    pub(crate) fn show_plane(&self, plane: Option<ShownPlane>) {
        let mut m = self.map.lock();
        m.shown = plane;
        self.dev.zap(
            u64::from(DISPLAY_REGION) << REGION_SHIFT,
            1u64 << REGION_SHIFT,
        );
    }

    /// GGTT entry `index` maps another page now: if the shown plane uses
    /// it, drop that display page from every mapping.
    pub(crate) fn plane_entry_changed(&self, index: u64) {
        let m = self.map.lock();
        if let Some(p) = m.shown {
            if let Some(at) = index.checked_sub(p.first).filter(|&at| at < p.pages) {
                self.dev.zap(
                    (u64::from(DISPLAY_REGION) << REGION_SHIFT) + (at << PAGE_SHIFT),
                    PAGE_SIZE,
                );
            }
        }
    }

    /// Device reset (open, close, VFIO_DEVICE_RESET): power-on state, every
    /// pin and shadow released, its engine work dropped, and nothing the
    /// previous user left behind: every mapping zapped, the scratch page
    /// (where every unmapped entry points, for the engines and the CPU)
    /// scrubbed.
    /// `new_owner`: the device changes hands (open, close): also nothing
    /// the previous user could observe (display counters, plane ids).
    pub(crate) fn reset(&self, new_owner: bool) {
        {
            let mut st = self.state.lock();
            let Ok((core, storage)) = st.split() else {
                return;
            };
            let mut env = env!(self, storage);
            if new_owner {
                core.reset_for_new_owner(&mut env);
            } else {
                core.reset(&mut env);
            }
            self.decode
                .store(core.cfg().memory_enabled(), Ordering::Release);
            self.sync_view(core);
            // Reset cleared the vregs: show the monitor again.
            st.mirror_edid();
            // The engines dropped this vGPU's work and every entry is on
            // scratch: no CPU view of it is left once both regions are
            // zapped; then the page is cleared for the next user.
            self.show_plane(None);
            self.zap_aperture();
            kapi::clear_page(&st.scratch);
        }
        self.pending.store(0, Ordering::Release);
        self.failed_told.store(false, Ordering::Relaxed);
    }

    /// Do what a trap left to do, its locks dropped.  Most register
    /// accesses leave nothing: they pay one test here, not a call.
    #[inline(always)]
    pub(crate) fn apply(&self, fx: Effects) {
        if !fx.is_empty() {
            self.apply_effects(fx);
        }
    }

    #[inline(never)]
    fn apply_effects(&self, fx: Effects) {
        if fx.zap_aperture {
            self.zap_aperture();
        }
        if let Some((deadline, now)) = fx.vblank {
            self.shared.arm_vblank(deadline, now);
        }
        // `sig` came from the core's `signal`, which applied the guest's
        // config space (MSI enable, INTX_DISABLE) under `state`.
        if fx.sig.msi {
            self.raise(vfio::VFIO_PCI_MSI_IRQ_INDEX);
        }
        if fx.sig.intx == Some(true) {
            self.raise(INTX);
        }
        if fx.kick {
            self.shared.kick();
        }
    }
}

pub(crate) fn errno(e: Error) -> isize {
    e.to_errno() as isize
}

/// The default monitor of a vGPU of resolution `res` (its id as the EDID
/// serial number), on the heap.
fn new_edid(res: Resolution, id: u32) -> Result<KBox<EdidRegion>> {
    match EdidRegion::new(res, id) {
        Ok(e) => KBox::new(e, GFP_KERNEL).map_err(Into::into),
        Err(e) => {
            pr_warn!("vGPU {id}: no EDID for {}: {e:?}\n", Shown(res));
            Err(EINVAL)
        }
    }
}

fn zeroed_vec<T: Copy>(n: usize, zero: T) -> Result<KVVec<T>> {
    let mut v = KVVec::with_capacity(n, GFP_KERNEL)?;
    v.resize(n, zero, GFP_KERNEL)?;
    Ok(v)
}

impl MdevVgpu {
    /// `vfio_device_ops.init` of a vGPU of type `ty` (index `type_idx`):
    /// partition, id, core state.
    pub(crate) fn create(
        shared: &'static Shared<Self>,
        dev: VfioDevice,
        type_idx: usize,
        ty: &VgpuType,
    ) -> Result<Pin<KBox<Self>>> {
        let (id, pid, part) = match shared.alloc_vgpu(ty) {
            Ok(v) => v,
            Err(e) => {
                pr_warn!("cannot create a {} MiB vGPU: not enough graphics memory, fences or vGPU slots left\n", ty.low_gm_size >> 20);
                return Err(e);
            }
        };
        let mut name = [0u8; 32];
        let name_len = ty.sysfs_name(&mut name).unwrap_or(0);
        match Self::new(
            shared,
            dev,
            id,
            pid,
            part,
            (type_idx, name, name_len),
            ty.weight,
            ty.resolution,
        ) {
            Ok(v) => {
                pr_info!(
                    "vGPU {id}: aperture {:#x}+{:#x}, high GM {:#x}+{:#x}, fences {}+{}\n",
                    part.aperture.base,
                    part.aperture.size,
                    part.high.base,
                    part.high.size,
                    part.fence_base,
                    part.fence_count
                );
                Ok(v)
            }
            Err(e) => {
                shared.free_vgpu(id, pid);
                shared.vgpu_released();
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        shared: &'static Shared<Self>,
        dev: VfioDevice,
        id: u32,
        pid: PartitionId,
        part: Partition,
        (type_idx, type_name, type_name_len): (usize, [u8; 32], usize),
        weight: u32,
        resolution: Resolution,
    ) -> Result<Pin<KBox<Self>>> {
        let edid = new_edid(resolution, id)?;
        let dmabuf_account = Arc::new(DmaBufAccount::default(), GFP_KERNEL)?;
        let (nregs, nggtt, nsnap) = storage_sizes::<DEFAULT_PPGTT_TABLES>(&part);
        let mut vregs = zeroed_vec(nregs, 0u32)?;
        let mut ggtt_guest = zeroed_vec(nggtt, 0u64)?;
        let mut ggtt_shadow = zeroed_vec(nggtt, 0u64)?;
        let mut ppgtt_snap = zeroed_vec(nsnap, 0u64)?;
        let scratch = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
        let mut shadow = KVec::with_capacity(SHADOW_PAGES_PER_VGPU, GFP_KERNEL)?;
        let mut shadow_pfns = KVec::with_capacity(SHADOW_PAGES_PER_VGPU, GFP_KERNEL)?;
        for _ in 0..SHADOW_PAGES_PER_VGPU {
            let pg = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
            shadow_pfns.push(HostPage(kapi::page_pfn(&pg)), GFP_KERNEL)?;
            shadow.push(pg, GFP_KERNEL)?;
        }
        let scratch_pfn = HostPage(kapi::page_pfn(&scratch));
        let params = VgpuParams {
            id,
            part,
            aperture_size: shared.layout.aperture_size,
            weight,
            scratch: scratch_pfn,
            shadow_pages: &shadow_pfns,
        };
        // Allocated first, so nothing can fail between `create` and owning it.
        let core_box = KBox::<CoreVgpu>::new_uninit(GFP_KERNEL)?;
        let core = {
            let storage = VgpuStorage {
                vregs: &mut vregs,
                ggtt_guest: &mut ggtt_guest,
                ggtt_shadow: &mut ggtt_shadow,
                ppgtt_snap: &mut ppgtt_snap,
            };
            // Creation pins nothing and maps nothing yet: no CPU view to keep.
            let mut guest = KGuest {
                dev,
                invalidating: &shared.invalidating,
            };
            let mut env = Env::<KServices<'_>> {
                st: storage,
                gpu: &mut KGpu(&shared.gpu),
                host: &mut KHost,
                alloc: &mut KAlloc,
                clock: &KClock,
                guest: &mut guest,
                cpu: &mut KCpu(None),
            };
            let mut core_box = core_box;
            if let Err(e) = CoreVgpu::create_in(&mut core_box, params, &mut env) {
                pr_warn!("vGPU {id}: the mediator refused it: {e:?}\n");
                return Err(ENOSPC);
            }
            // SAFETY: `create_in` succeeded: it initialised the slot.
            let core = unsafe { core_box.assume_init() };
            // The per-VM hang threshold (module parameter, paper §3.5.1).  It
            // was range-checked at load; should the scheduler still refuse it,
            // the vGPU is not created rather than run with another limit.
            let set = shared
                .gpu
                .lock()
                .gpu
                .scheduler_mut()
                .set_hang_limit(core.slot(), shared.cfg.hang_threshold);
            if let Err(e) = set {
                pr_err!(
                    "vGPU {id}: hang_threshold={} not applied: {e:?}\n",
                    shared.cfg.hang_threshold
                );
                // Nothing is pinned or mapped yet.
                KBox::into_inner(core).destroy(&mut env);
                return Err(EINVAL);
            }
            core
        };
        let slot = core.slot();
        let display_size = core.display_region_size();
        let mut state = State {
            core: Some(core),
            vregs,
            ggtt_guest,
            ggtt_shadow,
            ppgtt_snap,
            scratch,
            shadow,
            edid,
            no_plane: None,
            pre: crate::gvt_core::vgpu_migrate::Precopy::default(),
        };
        state.mirror_edid();
        let v = KBox::pin_init(
            try_pin_init!(MdevVgpu {
                dev,
                shared,
                slot,
                id,
                pid,
                part,
                type_idx,
                type_name,
                type_name_len,
                resolution,
                scratch_pfn: scratch_pfn.0,
                display_size,
                decode: AtomicBool::new(false),
                ballooned: AtomicU64::new(0),
                aperture_view: AtomicU64::new(part.aperture.base),
                failed_told: AtomicBool::new(false),
                pinning: AtomicUsize::new(0),
                self_faults: AtomicU64::new(0),
                dmabuf: AtomicBool::new(shared.cfg.dmabuf == 1),
                dmabufs_exported: AtomicU64::new(0),
                dmabuf_account,
                log <- new_mutex!(RateLimit::new()),
                pending: AtomicU32::new(0),
                work: SetOnce::new(),
                mig <- new_mutex!(crate::mig_state::Mig::new()),
                state <- new_mutex!(state),
                map <- new_mutex!(MapState { shown: None }),
                irqs <- new_mutex!(Irqs { ctx: [const { None }; NUM_IRQS as usize], intx_masked: false }),
                virqfd: [VirqfdSlot::new(), VirqfdSlot::new()],
                virqfd_lock <- new_mutex!(()),
            }),
            GFP_KERNEL,
        );
        let v = match v {
            Ok(v) => v,
            Err(e) => {
                // The state (its core vGPU and scratch page with it) was dropped
                // with the failed init: give the slot back and take the slices'
                // physical entries off the freed scratch page.  Nothing is
                // pinned or mapped yet.
                release_unborn(shared, slot, &part);
                return Err(e);
            }
        };
        // SAFETY: `v` is pinned for its whole life, and the item is dropped
        // with it (cancelled and awaited first in `release`).
        let work = match unsafe { CWork::new::<0, Self>(&v, true) } {
            Ok(w) => w,
            Err(e) => {
                // Dropping `v` frees the state and its scratch page.
                drop(v);
                release_unborn(shared, slot, &part);
                return Err(e);
            }
        };
        v.work.populate(work);
        shared.set_slot(slot, Some(&v));
        Ok(v)
    }

    /// `vfio_device_ops.release`: last reference gone; free everything.
    pub(crate) fn destroy(v: Pin<KBox<Self>>) {
        v.disable_irqs();
        let p = v.shared;
        // Out of the slot table first: the engine worker queues no more work.
        p.set_slot(v.slot, None);
        // Cancelled and awaited here; freed with `v`.
        if let Some(w) = v.work.as_ref() {
            w.cancel_sync();
        }
        {
            let mut st = v.state.lock();
            if let Some(core) = st.core.take() {
                let storage = st.storage();
                KBox::into_inner(core).destroy(&mut env!(&*v, storage, &p.gpu));
            }
            // Nothing maps the scratch page any more; scrub it before it goes
            // back to the allocator.
            kapi::clear_page(&st.scratch);
        }
        p.free_vgpu(v.id, v.pid);
        pr_info!("vGPU {} destroyed\n", v.id);
        drop(v);
        // Last: the parent may go as soon as this is counted.
        p.vgpu_released();
    }

    /// The type's sysfs name.
    pub(crate) fn type_name(&self) -> &[u8] {
        self.type_name.get(..self.type_name_len).unwrap_or(&[])
    }

    /// `vfio_device_ops.open_device`.
    pub(crate) fn open_device(&self) -> Result {
        self.mig_reset();
        // A new VMM starts with the type's default monitor (as GVT-g, which
        // sets up its EDID region at open); a device reset keeps the VMM's.
        let e = new_edid(self.resolution, self.id)?;
        self.state.lock().edid = e;
        self.reset(true);
        Self::apply_refresh(&mut self.state.lock());
        Ok(())
    }

    /// `vfio_device_ops.close_device`.
    pub(crate) fn close_device(&self) {
        self.mig_reset();
        self.disable_irqs();
        // Drop every pin while the device is still open (VFIO requires it).
        self.reset(true);
    }

    /// `vfio_device_ops.request`: the device is being removed while a VMM
    /// holds it: ask the VMM (REQ irq) to let go.
    pub(crate) fn request_release(&self, count: u32) {
        if count == 0 {
            pr_info!(
                "vGPU {}: remove requested, asking the VMM to release it\n",
                self.id
            );
        }
        self.signal(vfio::VFIO_PCI_REQ_IRQ_INDEX);
    }

    /// `vfio_device_ops.dma_unmap`: the VMM unmapped guest memory: every
    /// GGTT and PPGTT entry using a frame in it drops its pin.  VFIO type1
    /// calls each device in turn with its container lock dropped and
    /// retries (then BUGs) while any pin is left in the range: for as long
    /// as the range is being invalidated, no vGPU of this VMM may pin into
    /// it again ([`crate::invalidate`]).
    pub(crate) fn unmap_dma(&self, iova: u64, len: u64) {
        let guard = self.shared.invalidating.begin(iova, len, self.slot.0);
        {
            let mut st = self.state.lock();
            let Ok((core, storage)) = st.split() else {
                return;
            };
            core.dma_unmap(&mut env!(self, storage), iova, len);
        }
        drop(guard);
    }
}

/// Undo a creation that failed after the core created the vGPU: the slot
/// back to the scheduler, every physical GGTT entry of its slices not
/// present (they pointed at its scratch page, which is gone).
fn release_unborn(shared: &Shared<MdevVgpu>, slot: SlotId, part: &Partition) {
    let mut g = shared.gpu.lock();
    let MediatedGpu { gpu, phys } = &mut *g;
    let _ = gpu.destroy_slot(phys, &mut KHost, &KClock, slot);
    for r in [part.aperture, part.high] {
        let first = (r.base >> PAGE_SHIFT) as usize;
        let n = (r.size >> PAGE_SHIFT) as usize;
        if let Some(es) = phys.get_mut(first..first.saturating_add(n)) {
            es.fill(crate::gvt_core::backend::Pte::default());
        }
    }
}

/// One vGPU's guest memory, as the core's `GuestMemory`: its VMM's DMA
/// mappings, pinned through its VFIO device.
pub(crate) struct KGuest<'a> {
    pub(crate) dev: VfioDevice,
    pub(crate) invalidating: &'a Registry,
}

impl GuestMemory for KGuest<'_> {
    fn pin(&mut self, gfn: Gfn) -> core::result::Result<HostPage, MemError> {
        if gfn > (u64::MAX >> 12) {
            return Err(MemError::NotMapped);
        }
        // A range this VMM is unmapping right now: no new pin into it
        // (VFIO type1 would retry, then BUG).
        if !self.invalidating.may_pin(gfn) {
            return Err(MemError::NotMapped);
        }
        // The device is open: pins are taken only from BAR0 writes and
        // submissions, which need an open device fd.
        match self.dev.pin(gfn) {
            Ok(pfn) => Ok(HostPage(pfn)),
            Err(e) if e == ENOMEM => Err(MemError::NoResource),
            Err(_) => Err(MemError::NotMapped),
        }
    }
    fn unpin(&mut self, gfn: Gfn) {
        // Pairs with a successful `pin` of the same frame; the core releases
        // every pin while the device is still open (close_device).
        self.dev.unpin(gfn);
    }
}

/// One vGPU's CPU views of its graphics memory, as the core's
/// `CpuMappings`: the aperture (BAR2) and display-region mappings.  Zapped
/// under the vGPU's `map` lock, which its fault handlers hold from reading
/// a GGTT entry to inserting it.  `None`: no CPU view exists yet (creation).
pub(crate) struct KCpu<'a>(pub(crate) Option<&'a MdevVgpu>);

impl CpuMappings for KCpu<'_> {
    fn invalidate(&mut self, aperture_page_index: u64) {
        if let Some(v) = self.0 {
            v.zap_aperture_page(aperture_page_index);
        }
    }
    fn entry_changed(&mut self, index: u64) {
        if let Some(v) = self.0 {
            v.plane_entry_changed(index);
        }
    }
}
