// SPDX-License-Identifier: GPL-2.0
//! The physical side shared by every vGPU (paper §3.1): the mediated gvt-sim
//! GPU (`gvt_core::gpu::Gpu`, with the one physical GGTT), the kernel
//! services the core reaches through its traits, and the engine worker.
//!
//! | core trait | kernel service |
//! |---|---|
//! | `HostMemory` | `kmap_local_page` of a page frame |
//! | `HostPageAlloc` | `alloc_page` / `__free_page` |
//! | `Clock` | `ktime_get_ns` |
//! | `GuestMemory` | `vfio_pin_pages` / `vfio_unpin_pages` on the vGPU's VFIO device |
//! | `CpuMappings` | `unmap_mapping_range` of one page of the vGPU's BAR2 mapping |
//!
//! Locking: see the lock table in [`crate::vgpu`].  The GPU lock is lent to
//! the core as a [`GpuLock`] ([`KGpu`]), which takes it for bounded sections
//! only; the engine worker holds it for one bounded `run_engines` call at a
//! time and yields between calls.


use kernel::prelude::*;
use kernel::sync::Mutex;

use crate::gvt_core::aperture::CpuMappings;
use crate::gvt_core::backend::Pte;
use crate::gvt_core::gpu::{Gpu, GpuConfig, WorkBudget};
use crate::gvt_core::gpu_lock::GpuLock;
use crate::gvt_core::mem::{Gfn, GuestMemory, HostMemory, HostPage, MemError};
use crate::gvt_core::ppgtt::HostPageAlloc;
use crate::gvt_core::sched::{Clock, VgpuId};
use crate::gvt_core::stats::VgpuState;
use crate::parent::{self, MAX_VGPUS};
use crate::vfio;
use crate::vgpu::Vgpu;
use crate::invalidate;

pub(crate) type CoreGpu = Gpu<MAX_VGPUS>;

/// The GPU lock's contents: the mediated GPU and the physical GGTT.
pub(crate) struct PhysGpu {
    pub(crate) gpu: KBox<CoreGpu>,
    pub(crate) phys: KVVec<Pte>,
}

/// The power-on GPU, in read-only data: `Gpu<8>` is ~19 KiB, too big to
/// build on a kernel stack, so it is copied from here into the heap.
const UNPOWERED: CoreGpu = CoreGpu::unpowered(GpuConfig::DEFAULT);

impl PhysGpu {
    /// The GPU for a GM of `gm_size` bytes (one physical GGTT entry per page).
    pub(crate) fn new(gm_size: u64) -> Result<Self> {
        let entries = (gm_size >> 12) as usize;
        let mut phys = KVVec::with_capacity(entries, GFP_KERNEL)?;
        phys.resize(entries, Pte(0), GFP_KERNEL)?;
        let mut gpu = KBox::<CoreGpu>::new_uninit(GFP_KERNEL)?;
        // SAFETY: `UNPOWERED` is a promoted 'static value of the same type;
        // the copy fully initialises the allocation.
        let mut gpu = unsafe {
            gpu.as_mut_ptr().copy_from_nonoverlapping(&UNPOWERED, 1);
            gpu.assume_init()
        };
        gpu.power_on(&mut phys).map_err(|e| {
            pr_err!("gvt-sim failed to power on: {e:?}\n");
            EINVAL
        })?;
        Ok(Self { gpu, phys })
    }
}

/// The GPU lock, lent to the core: each `with` is one lock/unlock pair
/// around a bounded section (see `gvt_core::gpu_lock`).
pub(crate) struct KGpu<'a>(pub(crate) &'a Mutex<PhysGpu>);

impl GpuLock<MAX_VGPUS> for KGpu<'_> {
    fn with<R>(&mut self, f: impl FnOnce(&mut CoreGpu, &mut [Pte]) -> R) -> R {
        let mut g = self.0.lock();
        let PhysGpu { gpu, phys } = &mut *g;
        f(gpu, phys)
    }
}

/// The physical GGTT entry `index` as a page frame, if it maps one (the
/// fault handlers' view: a short section of the GPU lock).
pub(crate) fn phys_page(index: u64) -> Option<u64> {
    let g = parent::get().gpu.lock();
    let pte = *g.phys.get(usize::try_from(index).ok()?)?;
    pte.present().then_some(pte.page().0)
}

/// Host pages by page frame number.
pub(crate) struct KHost;

impl HostMemory for KHost {
    fn read(&self, page: HostPage, offset: usize, buf: &mut [u8]) -> core::result::Result<(), MemError> {
        // SAFETY: the helper checks the pfn and the bounds; `buf` is valid for
        // `buf.len()` bytes.
        let r = unsafe { vfio::gvt_rs_pfn_copy(page.0, offset, buf.as_mut_ptr().cast(), buf.len(), false) };
        if r == 0 { Ok(()) } else { Err(MemError::OutOfRange) }
    }
    fn write(&mut self, page: HostPage, offset: usize, data: &[u8]) -> core::result::Result<(), MemError> {
        // SAFETY: as above; the helper only reads `data`.
        let r = unsafe { vfio::gvt_rs_pfn_copy(page.0, offset, data.as_ptr().cast_mut().cast(), data.len(), true) };
        if r == 0 { Ok(()) } else { Err(MemError::OutOfRange) }
    }
}

/// Zeroed pages for shadow page tables.
pub(crate) struct KAlloc;

impl HostPageAlloc for KAlloc {
    fn alloc(&mut self) -> Option<HostPage> {
        // SAFETY: plain page allocation.
        let pfn = unsafe { vfio::gvt_rs_alloc_pfn() };
        (pfn != 0).then_some(HostPage(pfn))
    }
    fn free(&mut self, page: HostPage) {
        // SAFETY: `page` came from `alloc` and is no longer referenced by
        // any shadow table (the core's contract).
        unsafe { vfio::gvt_rs_free_pfn(page.0) };
    }
}

pub(crate) struct KClock;

impl Clock for KClock {
    fn now_ns(&self) -> u64 {
        // SAFETY: reads the monotonic clock.
        unsafe { vfio::gvt_rs_ktime_ns() }
    }
}

/// One vGPU's guest memory: its VMM's DMA mappings, pinned through VFIO.
pub(crate) struct KGuest(pub(crate) *mut vfio::vfio_device);

impl GuestMemory for KGuest {
    fn pin(&mut self, gfn: Gfn) -> core::result::Result<HostPage, MemError> {
        if gfn > (u64::MAX >> 12) {
            return Err(MemError::NotMapped);
        }
        // A range this VMM is unmapping right now: no new pin into it
        // (VFIO type1 would retry, then BUG).
        if !invalidate::may_pin(gfn) {
            return Err(MemError::NotMapped);
        }
        // SAFETY: the device is open (pins are taken only from BAR0 writes
        // and submissions, which need an open device fd).
        let r = unsafe { vfio::gvt_rs_pin_gfn(self.0, gfn) };
        if r < 0 {
            Err(if r == -(bindings_enomem() as i64) { MemError::NoResource } else { MemError::NotMapped })
        } else {
            Ok(HostPage(r as u64))
        }
    }
    fn unpin(&mut self, gfn: Gfn) {
        // SAFETY: pairs with a successful `pin` of the same frame; the core
        // releases every pin while the device is still open (close_device).
        unsafe { vfio::gvt_rs_unpin_gfn(self.0, gfn) };
    }
}

fn bindings_enomem() -> i32 {
    -ENOMEM.to_errno()
}

/// One vGPU's CPU views of its graphics memory: the aperture (BAR2) and
/// display-region mappings.  Zapped under the vGPU's `map` lock, which its
/// fault handlers hold from reading a GGTT entry to inserting it.
/// `None`: no CPU view exists yet (creation).
pub(crate) struct KCpu<'a>(pub(crate) Option<&'a Vgpu>);

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

/// Run the engines soon (from the trap path after an accepted submission).
pub(crate) fn kick() {
    // SAFETY: queues the module's static delayed work.
    unsafe { vfio::gvt_rs_kick_engines(0) };
}

/// Stop the worker for good (module unload, after every vGPU is gone).
pub(crate) fn stop() {
    // SAFETY: cancels the module's static delayed work and waits for it.
    unsafe { vfio::gvt_rs_stop_engines() };
}

/// Make the vblank work run at `deadline_ns` (or earlier, if it is already
/// armed for an earlier time).  Every vGPU that wants vblank interrupts
/// calls this after a register write; the work re-arms itself for the
/// earliest next vblank of all vGPUs, and stops when none wants one.  The
/// armed deadline and the timer change together under the helper's
/// spinlock, so two racing calls cannot leave the later deadline armed.
pub(crate) fn arm_vblank(deadline_ns: u64, now_ns: u64) {
    // SAFETY: queues the module's static delayed work.
    unsafe { vfio::gvt_rs_arm_vblank(deadline_ns, now_ns) };
}

/// Stop the vblank work for good (module unload, after every vGPU is gone).
pub(crate) fn stop_vblank() {
    // SAFETY: cancels the module's static delayed work and waits for it.
    unsafe { vfio::gvt_rs_stop_vblank() };
}

/// The vblank timer (paper §3.2, GVT-g's `vblank_timer_fn`): brings every
/// vGPU's frame counter up to now, latches and signals the vblank interrupts,
/// and runs again at the earliest next vblank any vGPU wants.
#[no_mangle]
extern "C" fn gvt_rs_vblank_work() {
    // SAFETY: plain helper call (its own spinlock).
    unsafe { vfio::gvt_rs_vblank_disarm() };
    let now = KClock.now_ns();
    let mut next = u64::MAX;
    parent::get().for_each_vgpu(|v| {
        if let Some(d) = v.vblank_tick(now) {
            next = next.min(d);
        }
    });
    if next != u64::MAX {
        arm_vblank(next, now);
    }
}

/// `run_engines` calls per worker invocation: each is one GPU-lock section
/// bounded by [`WorkBudget::WORKER`]; the lock is dropped and the CPU offered
/// to others between them.
const CALLS: u32 = 8;

/// The engine worker: the engines never run in the trap path.
#[no_mangle]
extern "C" fn gvt_rs_engine_work() {
    let p = parent::get();
    let mut idle = false;
    let mut worked = false;
    for _ in 0..CALLS {
        let (report, failed) = {
            let mut g = p.gpu.lock();
            let PhysGpu { gpu, phys } = &mut *g;
            let report = gpu.run_engines(phys, &mut KHost, &KClock, WorkBudget::WORKER);
            // Slots past their hang threshold (paper §3.5.1): their VMMs
            // hear about it through the REQ irq.
            let mut failed = 0u32;
            if report.hangs > 0 {
                for i in 0..MAX_VGPUS {
                    if gpu.scheduler().state(VgpuId(i as u16)) == VgpuState::Failed {
                        failed |= 1 << i;
                    }
                }
            }
            (report, failed)
        };
        // Hand the interrupts to each vGPU's work item (never waits on a
        // vGPU's lock), then let traps and other tasks in.
        p.deliver(&report, failed);
        idle = report.idle;
        worked |= report.work_ns > 0;
        if idle {
            break;
        }
        // SAFETY: plain cond_resched from process context, no lock held.
        unsafe { vfio::gvt_rs_cond_resched() };
    }
    if !idle {
        // More work: again at once (the workqueue and the cond_resched
        // above keep it preemptible).  Nothing ran but something waits (a
        // hang the watchdog is timing, a held TAIL): come back next tick
        // rather than spin.
        // SAFETY: queues the module's static delayed work.
        unsafe { vfio::gvt_rs_kick_engines(if worked { 0 } else { 1 }) };
    }
}
