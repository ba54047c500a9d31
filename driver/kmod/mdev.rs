// SPDX-License-Identifier: GPL-2.0
//! One vGPU as a VFIO device: its state, its locks, its lifecycle (mdev
//! probe/remove, `vfio_device_ops` init/release/open/close/request/
//! dma_unmap, reset) and its interrupt lines.  The other callbacks live by
//! concern: [`crate::region`] (read/write of every region, region info),
//! [`crate::ioctl`], [`crate::mmap`] (mmap and the fault handlers),
//! [`crate::dmabuf`], [`crate::sysfs`]; what a trap leaves to do after its
//! locks are dropped (signal, zap, kick, vblank) is applied in one place,
//! [`crate::effects`].
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
//! | `Vgpu::state` (one per vGPU) | the core vGPU, vregs, shadow GGTT/PPGTT storage, EDID | nothing | `vfio_pin_pages`/`unpin` (GUP: faults, possibly into *another* vGPU's aperture, the VMM's mm lock, VFIO's container lock), PPGTT shadowing, `GFP_KERNEL` |
//! | `Vgpu::map` (one per vGPU) | what the aperture and display mappings show; orders a zap against a fault | `state` | `unmap_mapping_range`, `vmf_insert_pfn`; never pins, never faults on user memory |
//! | `Parent::gpu` (shared) | the mediated GPU (engines, scheduler, slots) and the physical GGTT | `state` or `map` (taken by the core through `GpuLock` for bounded sections only) | nothing: one bounded engine step, one audit within the limits, a register, one GGTT store |
//! | `Vgpu::irqs` | eventfds, INTx mask | anything | `eventfd_signal` |
//! | `Parent::slots` | slot -> live vGPU | nothing (workers) | nothing: queues work, try-locks |
//! | `Parent::state`, invalidation registry | partitions and ids; DMA ranges being unmapped | nothing | nothing |
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
//! mappings of it under `map` (`gpu::KCpu`), then unpins the old page, and a
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

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use kernel::page::Page;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};
use kernel::types::Opaque;
use kernel::error::to_result;
use kernel::{bindings, new_mutex};

use crate::gpu::{KAlloc, KClock, KCpu, KGpu, KGuest, KHost, PhysGpu};
use crate::gvt_core::display::NoPlane;
use crate::gvt_core::edid::EdidRegion;
use crate::gvt_core::gpu::SHADOW_PAGES_PER_VGPU;
use crate::gvt_core::irq::Delivery;
use crate::gvt_core::sched::Clock as _;
use crate::gvt_core::vblank::DEFAULT_PERIOD_NS;
use crate::gvt_core::mem::{HostPage, PAGE_SIZE};
use crate::gvt_core::partition::{Partition, PartitionId};
use crate::gvt_core::sched::VgpuId;
use crate::gvt_core::vgpu_types::Resolution;
use crate::gvt_core::vgpu::{storage_sizes, Env, Vgpu as CoreVgpu, VgpuParams, VgpuStorage, DEFAULT_PPGTT_TABLES};
use crate::dmabuf::DmaBufAccount;
use crate::effects::Effects;
use crate::gvt_core::ratelimit::RateLimit;
use crate::invalidate;
use crate::parent;
use crate::sysfs::Shown;
use crate::vfio;

/// The kernel services of one vGPU's calls into the core.
macro_rules! env {
    ($v:expr) => {
        crate::gvt_core::vgpu::Env {
            host: &mut crate::gpu::KHost,
            alloc: &mut crate::gpu::KAlloc,
            clock: &crate::gpu::KClock,
            guest: &mut crate::gpu::KGuest($v.vdev),
            cpu: &mut crate::gpu::KCpu(Some($v)),
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

/// The object `vfio_alloc_device` allocates: `vfio_device` first.
#[repr(C)]
pub(crate) struct VgpuDev {
    vdev: vfio::vfio_device,
    vgpu: *mut Vgpu,
}

/// Interrupt eventfds the VMM wired with `VFIO_DEVICE_SET_IRQS`.
pub(crate) struct Irqs {
    ctx: [*mut bindings::eventfd_ctx; NUM_IRQS as usize],
    intx_masked: bool,
}

// SAFETY: eventfd contexts are refcounted kernel objects usable from any thread.
unsafe impl Send for Irqs {}

pub(crate) struct State {
    /// The mediator's view of this vGPU; `None` once destroyed (release).
    /// Boxed (3 KiB): `vgpu_init` runs deep in the mdev create path, on a
    /// 16 KiB kernel stack.
    pub(crate) core: Option<KBox<CoreVgpu>>,
    /// Virtual registers: 2 MiB, as GVT-g's vreg.
    vregs: KVVec<u32>,
    /// What the guest wrote in its GGTT slices, and the physical entries.
    ggtt_guest: KVVec<u64>,
    ggtt_shadow: KVVec<u64>,
    /// The shadow PPGTT's snapshot of the guest tables.
    ppgtt_snap: KVVec<u64>,
    /// Where unmapped GGTT entries of this vGPU point (owned here, freed
    /// after the core has unmapped it; scrubbed whenever the vGPU changes
    /// hands, see [`Vgpu::reset`]).
    #[allow(dead_code)]
    scratch: Page,
    /// Host-owned pages of its shadow rings and batches (owned here, as above).
    #[allow(dead_code)]
    shadow: KVec<Page>,
    /// The VMM's EDID region and the monitor it defines (mirrored into the
    /// vregs' guest EDID page at creation, on hotplug and after reset).
    /// Boxed: 1 KiB that would otherwise sit in `vgpu_init`'s stack frame.
    pub(crate) edid: KBox<EdidRegion>,
    /// Why the last primary-plane query found no plane (logged on change).
    pub(crate) no_plane: Option<NoPlane>,
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
    /// First GGTT index of the surface.
    pub(crate) first: u64,
    /// Pages of the plane; region pages past them show scratch.
    pub(crate) pages: u64,
}

/// What the `map` lock protects (see the lock table).
pub(crate) struct MapState {
    /// The plane the display region shows, `None`: scratch only.
    pub(crate) shown: Option<ShownPlane>,
}

/// Pending deliveries of the engine worker (bits of [`Vgpu::pending`]).
const PEND_MSI: u32 = 1;
const PEND_INTX: u32 = 2;
const PEND_INTX_HIGH: u32 = 4;

#[pin_data]
pub(crate) struct Vgpu {
    /// Our VFIO device (pins, mapping invalidation).
    pub(crate) vdev: *mut vfio::vfio_device,
    /// The scheduler slot of the mediated GPU.
    pub(crate) slot: VgpuId,
    pub(crate) id: u32,
    pid: PartitionId,
    pub(crate) part: Partition,
    #[allow(dead_code)]
    type_idx: usize,
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
    /// The VMM was told (REQ irq) that this vGPU failed; cleared on reset.
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
    /// dma-buf planes offered (sysfs `gvt/dmabuf`; on by default).  A VMM
    /// without OpenGL (QEMU `display=on` with no GL display) needs them off:
    /// QEMU takes dma-buf planes whenever the probe says they exist.
    pub(crate) dmabuf: AtomicBool,
    /// dma-buf fds handed out by `VFIO_DEVICE_GET_GFX_DMABUF` (sysfs
    /// `gvt/display`: shows which display path the VMM took).
    pub(crate) dmabufs_exported: AtomicU64,
    /// Live dma-bufs, the pages they hold, their CPU faults (sysfs
    /// `gvt/display`).  Shared with each buffer, which may outlive the vGPU.
    pub(crate) dmabuf_account: Arc<DmaBufAccount>,
    /// Interrupts the engine worker raised, not yet delivered (`PEND_*`).
    pending: AtomicU32,
    /// The work item that delivers them (under `state`, off the worker).
    work: AtomicPtr<vfio::gvt_rs_work>,
    #[pin]
    pub(crate) state: Mutex<State>,
    #[pin]
    pub(crate) map: Mutex<MapState>,
    #[pin]
    irqs: Mutex<Irqs>,
    /// Rate limit of the log lines a guest or VMM can trigger (leaf lock).
    #[pin]
    log: Mutex<RateLimit>,
    /// INTx mask (0) and unmask (1) irqfds.  vfio's virqfd code owns these
    /// slots (it clears them under its own lock when the eventfd closes);
    /// we only hand their addresses to `vfio_virqfd_{enable,disable}`.
    virqfd: [Opaque<*mut vfio::virqfd>; 2],
    /// Serialises virqfd enable/disable.
    #[pin]
    virqfd_lock: Mutex<()>,
}

pub(crate) const VIRQFD_MASK: usize = 0;
pub(crate) const VIRQFD_UNMASK: usize = 1;

// SAFETY: `vdev` is only passed to VFIO functions that may be called from
// any thread; everything mutable is behind the locks or atomic.
unsafe impl Send for Vgpu {}
// SAFETY: as above.
unsafe impl Sync for Vgpu {}

impl Vgpu {
    /// The vGPU passed its hang threshold and is failed (submissions
    /// refused until a reset): ask the VMM, once, through the REQ irq.
    pub(crate) fn failed(&self) {
        if !self.failed_told.swap(true, Ordering::Relaxed) {
            pr_warn!("vGPU {}: too many GPU hangs, failed until reset; asking the VMM to release it\n", self.id);
            self.signal(vfio::VFIO_PCI_REQ_IRQ_INDEX);
        }
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
        let w = self.work.load(Ordering::Acquire);
        if !w.is_null() {
            // SAFETY: the work item lives until `vgpu_release` frees it,
            // after this vGPU left the slot table the worker reads.
            unsafe { vfio::gvt_rs_work_queue(w) };
        }
    }

    /// The work item: signal what [`Vgpu::deliver`] noted, as the guest's
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
        Effects { sig, ..Effects::default() }.apply(self);
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
        let Ok((core, mut storage)) = st.split() else { return None };
        let d = core.vblank_tick(&mut KGpu(&parent::get().gpu), &mut storage, now);
        let next = core.vblank_deadline(now);
        let sig = core.signal(d);
        drop(st);
        Effects { sig, ..Effects::default() }.apply(self);
        next
    }

    /// The vblank period follows the monitor's mode (open, hotplug); called
    /// with the state lock held.
    pub(crate) fn apply_refresh(st: &mut State) {
        let period = st.edid.mode().and_then(|m| m.frame_period_ns()).unwrap_or(DEFAULT_PERIOD_NS);
        if let Some(core) = st.core.as_mut() {
            core.set_refresh_period(KClock.now_ns(), period);
        }
    }

    /// The device raises interrupt `index` (or the VMM loops one back with
    /// `SET_IRQS` `ACTION_TRIGGER`).  INTx is level-triggered and automasked:
    /// it is not raised while masked or while the guest's command register
    /// has `INTX_DISABLE`, and raising it masks it until the VMM unmasks.
    pub(crate) fn signal(&self, index: u32) {
        if index == INTX && self.state.lock().core().map_or(true, |c| c.cfg().intx_disabled()) {
            return;
        }
        self.raise(index);
    }

    /// [`Vgpu::signal`] for an interrupt the core already decided on
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
        if let Some(&ctx) = irqs.ctx.get(index as usize) {
            if !ctx.is_null() {
                // SAFETY: `ctx` holds a reference taken by eventfd_ctx_fdget.
                unsafe { vfio::gvt_rs_eventfd_signal(ctx) };
            }
        }
    }

    pub(crate) fn set_eventfd(&self, index: u32, ctx: *mut bindings::eventfd_ctx) {
        let mut irqs = self.irqs.lock();
        if index == INTX {
            // A new (or no) trigger starts unmasked, as in vfio-pci.
            irqs.intx_masked = false;
        }
        if let Some(slot) = irqs.ctx.get_mut(index as usize) {
            let old = core::mem::replace(slot, ctx);
            if !old.is_null() {
                // SAFETY: `old` held the reference taken when it was set.
                unsafe { bindings::eventfd_ctx_put(old) };
            }
        } else if !ctx.is_null() {
            // SAFETY: as above, for the reference we were handed.
            unsafe { bindings::eventfd_ctx_put(ctx) };
        }
    }

    /// Bind (fd >= 0) or unbind (fd < 0) the INTx mask/unmask irqfd `which`.
    pub(crate) fn set_virqfd(&self, which: usize, fd: i32) -> Result {
        let Some(slot) = self.virqfd.get(which) else {
            return Err(EINVAL);
        };
        let _guard = self.virqfd_lock.lock();
        if fd < 0 {
            // SAFETY: the slot is only written by vfio's virqfd code, which
            // serialises on its own lock; disabling an empty slot is a no-op.
            unsafe { vfio::vfio_virqfd_disable(slot.get()) };
            return Ok(());
        }
        let thread: unsafe extern "C" fn(*mut core::ffi::c_void, *mut core::ffi::c_void) =
            if which == VIRQFD_MASK { intx_virqfd_mask } else { intx_virqfd_unmask };
        // SAFETY: `self` outlives the irqfd: `disable_irqs` (close and
        // release) disables it, which waits for a running callback.
        to_result(unsafe {
            vfio::vfio_virqfd_enable(
                ptr::from_ref(self).cast_mut().cast(),
                None,
                Some(thread),
                ptr::null_mut(),
                slot.get(),
                fd,
            )
        })
    }

    /// Log a line a guest or a VMM can cause, rate-limited per vGPU
    /// (`gvt_core::ratelimit`): a loop cannot flood the kernel log.
    pub(crate) fn log_limited(&self, msg: core::fmt::Arguments<'_>) {
        let pass = self.log.lock().check(KClock.now_ns());
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
            self.set_eventfd(i, ptr::null_mut());
        }
        self.irqs.lock().intx_masked = false;
    }

    /// Zap every CPU mapping of the aperture region (BAR2), so the next
    /// access faults and is checked again (memory decode off, reset).
    pub(crate) fn zap_aperture(&self) {
        let _m = self.map.lock();
        zap(self.vdev, u64::from(BAR2) << REGION_SHIFT, 1u64 << REGION_SHIFT);
    }

    /// Zap one aperture page's mappings (a GGTT entry of the slice changed).
    pub(crate) fn zap_aperture_page(&self, index: u64) {
        let _m = self.map.lock();
        zap(self.vdev, (u64::from(BAR2) << REGION_SHIFT) + (index << PAGE_SHIFT), PAGE_SIZE);
    }

    /// The display region shows `plane` from now on (a query changed it, or
    /// a reset took it away): the old pages leave every mapping.
    pub(crate) fn show_plane(&self, plane: Option<ShownPlane>) {
        let mut m = self.map.lock();
        m.shown = plane;
        zap(self.vdev, u64::from(DISPLAY_REGION) << REGION_SHIFT, 1u64 << REGION_SHIFT);
    }

    /// GGTT entry `index` maps another page now: if the shown plane uses
    /// it, drop that display page from every mapping.
    pub(crate) fn plane_entry_changed(&self, index: u64) {
        let m = self.map.lock();
        if let Some(p) = m.shown {
            if let Some(at) = index.checked_sub(p.first).filter(|&at| at < p.pages) {
                zap(self.vdev, (u64::from(DISPLAY_REGION) << REGION_SHIFT) + (at << PAGE_SHIFT), PAGE_SIZE);
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
            let Ok((core, mut storage)) = st.split() else { return };
            let mut gpu = KGpu(&parent::get().gpu);
            if new_owner {
                core.reset_for_new_owner(&mut gpu, &mut storage, &mut env!(self));
            } else {
                core.reset(&mut gpu, &mut storage, &mut env!(self));
            }
            self.decode.store(core.cfg().memory_enabled(), Ordering::Release);
            // Reset cleared the vregs: show the monitor again.
            st.mirror_edid();
            // The engines dropped this vGPU's work and every entry is on
            // scratch: no CPU view of it is left once both regions are
            // zapped; then the page is cleared for the next user.
            self.show_plane(None);
            self.zap_aperture();
            // SAFETY: our own page, alive while `st` holds it.
            unsafe { vfio::gvt_rs_clear_pfn(self.scratch_pfn) };
        }
        self.pending.store(0, Ordering::Release);
        self.failed_told.store(false, Ordering::Relaxed);
    }
}

/// Zap `[start, start + len)` of `vdev`'s file mappings.
fn zap(vdev: *mut vfio::vfio_device, start: u64, len: u64) {
    // SAFETY: `vdev` is a live, initialised vfio device (every caller runs
    // between init and release).
    unsafe { vfio::gvt_rs_zap_range(vdev, start, len) };
}

/// The work item of a vGPU (C trampoline of `gvt_rs_work_new`).
#[no_mangle]
extern "C" fn gvt_rs_vgpu_work(owner: *mut core::ffi::c_void) {
    // SAFETY: `owner` is the `Vgpu` that created the item; `vgpu_release`
    // cancels and waits for it before freeing the `Vgpu`.
    unsafe { &*owner.cast::<Vgpu>() }.run_deliveries();
}

/// virqfd callbacks (process context, from vfio's workqueue).
unsafe extern "C" fn intx_virqfd_mask(opaque: *mut core::ffi::c_void, _data: *mut core::ffi::c_void) {
    // SAFETY: `opaque` is the `Vgpu` that enabled the irqfd and disables it
    // (waiting for this callback) before it is freed.
    unsafe { &*opaque.cast::<Vgpu>() }.set_intx_mask(true);
}

unsafe extern "C" fn intx_virqfd_unmask(opaque: *mut core::ffi::c_void, _data: *mut core::ffi::c_void) {
    // SAFETY: as in `intx_virqfd_mask`.
    unsafe { &*opaque.cast::<Vgpu>() }.set_intx_mask(false);
}

/// The running task, as an address (for [`Vgpu::pinning`]).
pub(crate) fn current_task() -> usize {
    kernel::task::Task::current_raw() as usize
}

/// # Safety
/// `vdev` must be the `vfio_device` of a `VgpuDev` whose `init` succeeded and
/// whose `release` has not run (true for every vfio op and sysfs callback).
pub(crate) unsafe fn vgpu_of<'a>(vdev: *mut vfio::vfio_device) -> &'a Vgpu {
    // SAFETY: `vdev` is the first field of `VgpuDev` (repr(C)); `vgpu` was set
    // by `init` and stays valid until `release`.
    unsafe { &*(*vdev.cast::<VgpuDev>()).vgpu }
}

pub(crate) fn errno(e: Error) -> isize {
    e.to_errno() as isize
}

/// A C ops table in a `static`: read-only after compilation.
#[repr(transparent)]
pub(crate) struct Ops<T>(pub(crate) T);
// SAFETY: the tables are never written; their raw pointers point to 'static
// data and functions.
unsafe impl<T> Sync for Ops<T> {}

// ---- mdev driver ---------------------------------------------------------

static OPS: Ops<vfio::vfio_device_ops> = Ops(vfio::vfio_device_ops {
    name: c"gvt_rs".as_ptr().cast_mut().cast(),
    init: Some(vgpu_init),
    release: Some(vgpu_release),
    open_device: Some(vgpu_open),
    close_device: Some(vgpu_close),
    read: Some(crate::region::vgpu_read),
    write: Some(crate::region::vgpu_write),
    ioctl: Some(crate::ioctl::vgpu_ioctl),
    get_region_info_caps: Some(crate::region::vgpu_region_info),
    mmap: Some(crate::mmap::vgpu_mmap),
    request: Some(vgpu_request),
    dma_unmap: Some(vgpu_dma_unmap),
    // Filled in by the C helper that registers the table
    // (`gvt_rs_vfio_alloc_device`): VFIO's emulated-IOMMU iommufd helpers,
    // compiled only in kernels with CONFIG_IOMMUFD.
    bind_iommufd: None,
    unbind_iommufd: None,
    attach_ioas: None,
    detach_ioas: None,
    pasid_attach_ioas: None,
    pasid_detach_ioas: None,
    match_: None,
    match_token_uuid: None,
    device_feature: None,
});

/// `mdev_driver.probe`: allocate the VFIO device (its `init` allocates the
/// partition) and register it with an emulated IOMMU.
pub(crate) unsafe extern "C" fn mdev_probe(mdev: *mut vfio::mdev_device) -> i32 {
    // SAFETY: the mdev core passes a live device.
    let dev = unsafe { vfio::gvt_rs_mdev_dev(mdev) };
    // SAFETY: `OPS` is 'static; the size covers `VgpuDev`, whose first field
    // is the `vfio_device`.
    let vdev = unsafe { vfio::gvt_rs_vfio_alloc_device(core::mem::size_of::<VgpuDev>(), dev, &OPS.0) };
    // SAFETY: checking an ERR_PTR-or-pointer value.
    if unsafe { vfio::gvt_rs_is_err(vdev.cast()) } {
        // SAFETY: as above.
        return unsafe { vfio::gvt_rs_ptr_err(vdev.cast()) } as i32;
    }
    // SAFETY: `vdev` is initialised (its `init` succeeded).
    let ret = unsafe { vfio::vfio_register_emulated_iommu_dev(vdev) };
    if ret != 0 {
        // SAFETY: drops the allocation reference; `release` frees our state.
        unsafe { vfio::gvt_rs_vfio_put_device(vdev) };
        return ret;
    }
    // SAFETY: `dev` is the mdev's device; drvdata is ours.
    unsafe { vfio::gvt_rs_set_drvdata(dev, vdev.cast()) };
    0
}

/// `mdev_driver.remove`: waits (signalling REQ through `request`) until the
/// VMM has released the device, then drops it.
pub(crate) unsafe extern "C" fn mdev_remove(mdev: *mut vfio::mdev_device) {
    // SAFETY: drvdata was set to our `vfio_device` by `mdev_probe`.
    let vdev = unsafe { vfio::gvt_rs_get_drvdata(vfio::gvt_rs_mdev_dev(mdev)) }.cast::<vfio::vfio_device>();
    // SAFETY: registered by `mdev_probe`; put pairs with the allocation.
    unsafe {
        vfio::vfio_unregister_group_dev(vdev);
        vfio::gvt_rs_vfio_put_device(vdev);
    }
}

/// `vfio_device_ops.init`: partition, id, core state.
unsafe extern "C" fn vgpu_init(vdev: *mut vfio::vfio_device) -> i32 {
    let p = parent::get();
    // SAFETY: `vdev->dev` is the mdev device passed to vfio_alloc_device.
    let mdev = unsafe { vfio::gvt_rs_to_mdev_device((*vdev).dev) };
    // SAFETY: the mdev core set `type` before probing.
    let Some(type_idx) = p.type_index(unsafe { (*mdev).type_ }) else {
        return EINVAL.to_errno();
    };
    let Some(ty) = p.vgpu_type(type_idx) else {
        return EINVAL.to_errno();
    };
    let (id, pid, part) = match p.alloc_vgpu(ty) {
        Ok(v) => v,
        Err(e) => {
            pr_warn!("cannot create a {} MiB vGPU: not enough graphics memory, fences or vGPU slots left\n", ty.low_gm_size >> 20);
            return e.to_errno();
        }
    };
    match new_vgpu(vdev, id, pid, part, type_idx, ty.weight, ty.resolution) {
        Ok(v) => {
            // SAFETY: `vdev` is the first field of a zeroed `VgpuDev`.
            unsafe { (*vdev.cast::<VgpuDev>()).vgpu = v };
            pr_info!(
                "vGPU {id}: aperture {:#x}+{:#x}, high GM {:#x}+{:#x}, fences {}+{}\n",
                part.aperture.base,
                part.aperture.size,
                part.high.base,
                part.high.size,
                part.fence_base,
                part.fence_count
            );
            0
        }
        Err(e) => {
            p.free_vgpu(id, pid);
            e.to_errno()
        }
    }
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

fn new_vgpu(
    vdev: *mut vfio::vfio_device,
    id: u32,
    pid: PartitionId,
    part: Partition,
    type_idx: usize,
    weight: u32,
    resolution: Resolution,
) -> Result<*mut Vgpu> {
    let edid = new_edid(resolution, id)?;
    let dmabuf_account = Arc::new(DmaBufAccount::default(), GFP_KERNEL)?;
    let p = parent::get();
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
        // SAFETY: `pg` is a live page we own.
        shadow_pfns.push(HostPage(unsafe { vfio::gvt_rs_page_pfn(pg.as_ptr()) }), GFP_KERNEL)?;
        shadow.push(pg, GFP_KERNEL)?;
    }
    // SAFETY: `scratch` is a live page we own.
    let scratch_pfn = HostPage(unsafe { vfio::gvt_rs_page_pfn(scratch.as_ptr()) });
    let params = VgpuParams {
        id,
        part,
        aperture_size: p.layout.aperture_size,
        weight,
        scratch: scratch_pfn,
        shadow_pages: &shadow_pfns,
    };
    // Allocated first, so nothing can fail between `create` and owning it.
    let core_box = KBox::<CoreVgpu>::new_uninit(GFP_KERNEL)?;
    let core = {
        let mut storage = VgpuStorage {
            vregs: &mut vregs,
            ggtt_guest: &mut ggtt_guest,
            ggtt_shadow: &mut ggtt_shadow,
            ppgtt_snap: &mut ppgtt_snap,
        };
        // Creation pins nothing and maps nothing yet: no CPU view to keep.
        let mut env = Env { host: &mut KHost, alloc: &mut KAlloc, clock: &KClock, guest: &mut KGuest(vdev), cpu: &mut KCpu(None) };
        let mut core_box = core_box;
        if let Err(e) = CoreVgpu::create_in(&mut core_box, &mut KGpu(&p.gpu), params, &mut storage, &mut env) {
            pr_warn!("vGPU {id}: the mediator refused it: {e:?}\n");
            return Err(ENOSPC);
        }
        // SAFETY: `create_in` succeeded: it initialised the slot.
        let core = unsafe { core_box.assume_init() };
        // The per-VM hang threshold (module parameter, paper §3.5.1).  It
        // was range-checked at load; should the scheduler still refuse it,
        // the vGPU is not created rather than run with another limit.
        let set = p.gpu.lock().gpu.scheduler_mut().set_hang_limit(core.slot(), p.cfg.hang_threshold);
        if let Err(e) = set {
            pr_err!("vGPU {id}: hang_threshold={} not applied: {e:?}\n", p.cfg.hang_threshold);
            // Nothing is pinned or mapped yet.
            KBox::into_inner(core).destroy(&mut KGpu(&p.gpu), &mut storage, &mut env);
            return Err(EINVAL);
        }
        core
    };
    let slot = core.slot();
    let display_size = core.display_region_size();
    let mut state = State { core: Some(core), vregs, ggtt_guest, ggtt_shadow, ppgtt_snap, scratch, shadow, edid, no_plane: None };
    state.mirror_edid();
    let v = KBox::pin_init(
        try_pin_init!(Vgpu {
            vdev,
            slot,
            id,
            pid,
            part,
            type_idx,
            resolution,
            scratch_pfn: scratch_pfn.0,
            display_size,
            decode: AtomicBool::new(false),
            ballooned: AtomicU64::new(0),
            failed_told: AtomicBool::new(false),
            pinning: AtomicUsize::new(0),
            self_faults: AtomicU64::new(0),
            dmabuf: AtomicBool::new(true),
            dmabufs_exported: AtomicU64::new(0),
            dmabuf_account,
            log <- new_mutex!(RateLimit::new()),
            pending: AtomicU32::new(0),
            work: AtomicPtr::new(ptr::null_mut()),
            state <- new_mutex!(state),
            map <- new_mutex!(MapState { shown: None }),
            irqs <- new_mutex!(Irqs { ctx: [ptr::null_mut(); NUM_IRQS as usize], intx_masked: false }),
            virqfd: [Opaque::new(ptr::null_mut()), Opaque::new(ptr::null_mut())],
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
            release_unborn(slot, &part);
            return Err(e);
        }
    };
    // SAFETY: `v` is pinned for its whole life; the item is freed (after
    // waiting for it) in `vgpu_release`.
    let work = unsafe { vfio::gvt_rs_work_new(ptr::from_ref(&*v).cast_mut().cast()) };
    if work.is_null() {
        // Dropping `v` frees the state and its scratch page.
        drop(v);
        release_unborn(slot, &part);
        return Err(ENOMEM);
    }
    v.work.store(work, Ordering::Release);
    p.set_slot(slot, Some(&v));
    // SAFETY: ownership moves to the raw pointer; `vgpu_release` rebuilds the
    // box, and nothing moves the value in between.
    Ok(KBox::into_raw(unsafe { Pin::into_inner_unchecked(v) }))
}

/// Undo a creation that failed after the core created the vGPU: the slot
/// back to the scheduler, every physical GGTT entry of its slices not
/// present (they pointed at its scratch page, which is gone).
fn release_unborn(slot: VgpuId, part: &Partition) {
    let mut g = parent::get().gpu.lock();
    let PhysGpu { gpu, phys } = &mut *g;
    let _ = gpu.destroy_slot(phys, &mut KHost, &KClock, slot);
    for r in [part.aperture, part.high] {
        let first = (r.base >> PAGE_SHIFT) as usize;
        let n = (r.size >> PAGE_SHIFT) as usize;
        if let Some(es) = phys.get_mut(first..first.saturating_add(n)) {
            es.fill(crate::gvt_core::backend::Pte::default());
        }
    }
}

/// `vfio_device_ops.release`: last reference gone; free everything.
unsafe extern "C" fn vgpu_release(vdev: *mut vfio::vfio_device) {
    // SAFETY: `vdev` is the first field of our `VgpuDev`.
    let raw = unsafe { (*vdev.cast::<VgpuDev>()).vgpu };
    if raw.is_null() {
        return;
    }
    // SAFETY: `raw` came from `KBox::into_raw` in `new_vgpu`; no op runs
    // after release.
    let v = unsafe { KBox::from_raw(raw) };
    v.disable_irqs();
    let p = parent::get();
    // Out of the slot table first: the engine worker queues no more work.
    p.set_slot(v.slot, None);
    // SAFETY: created in `new_vgpu`; cancelled and awaited here, once.
    unsafe { vfio::gvt_rs_work_free_sync(v.work.swap(ptr::null_mut(), Ordering::AcqRel)) };
    {
        let mut st = v.state.lock();
        if let Some(core) = st.core.take() {
            let mut storage = st.storage();
            KBox::into_inner(core).destroy(&mut KGpu(&p.gpu), &mut storage, &mut env!(&*v));
        }
        // Nothing maps the scratch page any more; scrub it before it goes
        // back to the allocator.
        // SAFETY: our own page, still owned by `st`.
        unsafe { vfio::gvt_rs_clear_pfn(v.scratch_pfn) };
    }
    p.free_vgpu(v.id, v.pid);
    pr_info!("vGPU {} destroyed\n", v.id);
}

unsafe extern "C" fn vgpu_open(vdev: *mut vfio::vfio_device) -> i32 {
    // SAFETY: called between init and release.
    let v = unsafe { vgpu_of(vdev) };
    // A new VMM starts with the type's default monitor (as GVT-g, which
    // sets up its EDID region at open); a device reset keeps the VMM's.
    match new_edid(v.resolution, v.id) {
        Ok(e) => v.state.lock().edid = e,
        Err(e) => return e.to_errno(),
    }
    v.reset(true);
    Vgpu::apply_refresh(&mut v.state.lock());
    0
}

unsafe extern "C" fn vgpu_close(vdev: *mut vfio::vfio_device) {
    // SAFETY: called between init and release.
    let v = unsafe { vgpu_of(vdev) };
    v.disable_irqs();
    // Drop every pin while the device is still open (VFIO requires it).
    v.reset(true);
}

/// `vfio_device_ops.request`: the device is being removed while a VMM holds
/// it: ask the VMM (REQ irq) to let go.
unsafe extern "C" fn vgpu_request(vdev: *mut vfio::vfio_device, count: u32) {
    // SAFETY: called between init and release.
    let v = unsafe { vgpu_of(vdev) };
    if count == 0 {
        pr_info!("vGPU {}: remove requested, asking the VMM to release it\n", v.id);
    }
    v.signal(vfio::VFIO_PCI_REQ_IRQ_INDEX);
}

/// `vfio_device_ops.dma_unmap`: the VMM unmapped guest memory: every GGTT
/// and PPGTT entry using a frame in it drops its pin.  VFIO type1 calls each
/// device in turn with its container lock dropped and retries (then BUGs)
/// while any pin is left in the range: for as long as the range is being
/// invalidated, no vGPU of this VMM may pin into it again
/// ([`crate::invalidate`]).
unsafe extern "C" fn vgpu_dma_unmap(vdev: *mut vfio::vfio_device, iova: u64, len: u64) {
    // SAFETY: called between init and release.
    let v = unsafe { vgpu_of(vdev) };
    let guard = invalidate::begin(iova, len, v.slot.0);
    {
        let mut st = v.state.lock();
        let Ok((core, mut storage)) = st.split() else { return };
        core.dma_unmap(&mut KGpu(&parent::get().gpu), &mut storage, &mut env!(v), iova, len);
    }
    drop(guard);
}
