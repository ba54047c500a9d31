// SPDX-License-Identifier: GPL-2.0
//! What every vGPU of the parent shares (paper §3.1): the mediated gvt-sim
//! GPU with the one physical GGTT ([`MediatedGpu`], under the GPU lock),
//! the partitions and vGPU ids, the scheduler slot table, the DMA ranges
//! being unmapped, and the two workers that serve all vGPUs: the engine
//! worker and the vblank timer.  Each vGPU holds a reference to it; the
//! workers get it as their owner.  It names no vGPU type: the slot table
//! holds any [`SlotVgpu`].
//!
//! | core trait | kernel service |
//! |---|---|
//! | `HostMemory`, `HostPageAlloc`, `Clock` | [`crate::kapi`] (`KHost`, `KAlloc`, `KClock`) |
//! | `GpuLock` | [`KGpu`]: the GPU lock, taken for the core's bounded sections |
//! | `GuestMemory`, `CpuMappings` | [`crate::mdev`] (`KGuest`, `KCpu`): one vGPU's VFIO device |
//!
//! Locking: see the lock table in [`crate::mdev`].  The GPU lock is lent to
//! the core as a [`GpuLock`] ([`KGpu`]), which takes it for bounded sections
//! only; the engine worker holds it for one bounded `run_engines` call at a
//! time and yields between calls.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicUsize, Ordering};

use kernel::new_mutex;
use kernel::prelude::*;
use kernel::sync::{Mutex, SetOnce};

use crate::gvt_core::backend::Pte;
use crate::gvt_core::gpu::{host_reserved_size, EngineReport, Gpu, GpuConfig, WorkBudget};
use crate::gvt_core::irq::Delivery;
use crate::gvt_core::partition::{GmLayout, Partition, PartitionError, PartitionId, Partitioner};
use crate::gvt_core::sched::SlotId;
use crate::gvt_core::services::GpuLock;
use crate::gvt_core::stats::VgpuState;
use crate::gvt_core::vgpu_types::VgpuType;
use crate::invalidate::Registry;
use crate::kapi::{self, CWork, KClock, KHost, WorkHandler};

/// Most vGPUs (and so partition slots) a parent can hold (the range of the
/// `max_vgpus` module parameter).
pub(crate) const MAX_VGPUS: usize = 64;

pub(crate) type CoreGpu = Gpu<MAX_VGPUS>;

/// The module parameters, as given.
#[derive(Clone, Copy)]
pub(crate) struct ParentConfig {
    pub(crate) aperture_mb: u32,
    pub(crate) gm_mb: u32,
    pub(crate) fences: u32,
    pub(crate) max_vgpus: u32,
    pub(crate) hang_threshold: u32,
    /// Initial `gvt/dmabuf` of a new vGPU (0 or 1).
    pub(crate) dmabuf: u32,
    /// The benchmark switch: 1 = submissions not audited (0 or 1).
    pub(crate) bench_no_audit: u32,
}

impl ParentConfig {
    /// Check the parameters; a bad one fails the load with a clear log line.
    pub(crate) fn layout(&self) -> Result<GmLayout> {
        let a = self.aperture_mb;
        if !(16..=4096).contains(&a) || !a.is_power_of_two() {
            pr_err!("aperture_mb={a} is invalid: must be a power of two in 16..=4096\n");
            return Err(EINVAL);
        }
        if !(1..=MAX_VGPUS as u32).contains(&self.max_vgpus) {
            pr_err!(
                "max_vgpus={} is invalid: must be in 1..={MAX_VGPUS}\n",
                self.max_vgpus
            );
            return Err(EINVAL);
        }
        // The host's shadow rings and batches: 16 MiB, 32 MiB for 64 vGPUs.
        let reserved = host_reserved_size(self.max_vgpus as usize);
        if self.gm_mb > 4096 || u64::from(self.gm_mb) < u64::from(a) + (reserved >> 20) + 1 {
            pr_err!(
                "gm_mb={} is invalid: must be <= 4096 and leave room above aperture_mb={a} for {} MiB of host GM\n",
                self.gm_mb,
                reserved >> 20
            );
            return Err(EINVAL);
        }
        if !(1..=16).contains(&self.fences) {
            pr_err!("fences={} is invalid: must be in 1..=16\n", self.fences);
            return Err(EINVAL);
        }
        if !(1..=1000).contains(&self.hang_threshold) {
            pr_err!(
                "hang_threshold={} is invalid: must be in 1..=1000\n",
                self.hang_threshold
            );
            return Err(EINVAL);
        }
        if self.dmabuf > 1 {
            pr_err!("dmabuf={} is invalid: must be 0 or 1\n", self.dmabuf);
            return Err(EINVAL);
        }
        if self.bench_no_audit > 1 {
            pr_err!(
                "bench_no_audit={} is invalid: must be 0 or 1\n",
                self.bench_no_audit
            );
            return Err(EINVAL);
        }
        Ok(GmLayout {
            aperture_size: u64::from(a) << 20,
            total_gm: u64::from(self.gm_mb) << 20,
            fences: self.fences,
            host_reserved_high: reserved,
        })
    }
}

/// The GPU lock's contents: the mediated GPU and the physical GGTT.
pub(crate) struct MediatedGpu {
    pub(crate) gpu: KBox<CoreGpu>,
    pub(crate) phys: KVVec<Pte>,
}

/// The power-on GPU, in read-only data: `Gpu<64>` is too big to
/// build on a kernel stack, so it is copied from here into the heap.
const UNPOWERED: CoreGpu = CoreGpu::unpowered(GpuConfig::DEFAULT);

impl MediatedGpu {
    /// The GPU for a GM of `gm_size` bytes (one physical GGTT entry per
    /// page) and at most `slots` live vGPUs.
    /// `audit`: false only for the `bench_no_audit` benchmark switch.
    pub(crate) fn new(gm_size: u64, slots: usize, audit: bool) -> Result<Self> {
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
        gpu.power_on_for(&mut phys, slots).map_err(|e| {
            pr_err!("gvt-sim failed to power on: {e:?}\n");
            EINVAL
        })?;
        if !audit {
            pr_warn!("bench_no_audit=1: command audit OFF (benchmark switch): guests' submissions are not checked\n");
            gpu.set_audit_checks(false);
        }
        Ok(Self { gpu, phys })
    }
}

/// The GPU lock, lent to the core: each `with` is one lock/unlock pair
/// around a bounded section (see `gvt_core::gpu_lock`).
pub(crate) struct KGpu<'a>(pub(crate) &'a Mutex<MediatedGpu>);

impl GpuLock for KGpu<'_> {
    type Gpu = CoreGpu;
    fn with<R>(&mut self, f: impl FnOnce(&mut CoreGpu, &mut [Pte]) -> R) -> R {
        let mut g = self.0.lock();
        let MediatedGpu { gpu, phys } = &mut *g;
        f(gpu, phys)
    }
}

/// A vGPU as the shared workers see it through the slot table.
pub(crate) trait SlotVgpu: Sync {
    /// The engine worker raised `d` for it (never waits for its locks).
    fn deliver(&self, d: Delivery);
    /// It passed its hang threshold.
    fn failed(&self);
    /// The vblank timer at `now`; when it next wants the timer.
    fn vblank_tick(&self, now: u64) -> Option<u64>;
}

/// What the parent's partition lock protects.
pub(crate) struct Partitions {
    pub(crate) partitioner: KBox<Partitioner<MAX_VGPUS>>,
    /// vGPU ids in use (bit n: id n + 1).
    ids: u64,
}

const ENGINE: usize = 0;
const VBLANK: usize = 1;

/// The side of the parent every vGPU shares.  Pinned inside the parent,
/// which outlives every vGPU.
#[pin_data]
pub(crate) struct Shared<V> {
    pub(crate) cfg: ParentConfig,
    pub(crate) layout: GmLayout,
    /// Partitions and ids (`Shared::partitions` of the lock table).
    #[pin]
    pub(crate) partitions: Mutex<Partitions>,
    /// The GPU lock: the mediated gvt-sim GPU and the physical GGTT.
    #[pin]
    pub(crate) gpu: Mutex<MediatedGpu>,
    /// Scheduler slot -> live vGPU (as an address), for the workers'
    /// deliveries.  A vGPU clears its entry before it is freed; the workers
    /// call it while holding this lock.
    #[pin]
    slots: Mutex<[usize; MAX_VGPUS]>,
    /// DMA ranges being unmapped (see [`crate::invalidate`]).
    #[pin]
    pub(crate) invalidating: Registry,
    /// vGPUs whose data exists (from a successful `alloc_vgpu` to the end
    /// of their release): the parent waits for none to be left before it
    /// goes ([`Shared::wait_vgpus_released`]).
    vgpus: AtomicUsize,
    /// The engine worker and the vblank timer (set once `self` is pinned).
    engine: SetOnce<CWork>,
    vblank: SetOnce<CWork>,
    _vgpu: PhantomData<fn(&V)>,
}

impl<V: SlotVgpu> Shared<V> {
    pub(crate) fn new(
        cfg: ParentConfig,
        layout: GmLayout,
        partitioner: KBox<Partitioner<MAX_VGPUS>>,
        gpu: MediatedGpu,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            cfg,
            layout,
            partitions <- new_mutex!(Partitions { partitioner, ids: 0 }),
            gpu <- new_mutex!(gpu),
            slots <- new_mutex!([0; MAX_VGPUS]),
            invalidating <- Registry::new(),
            vgpus: AtomicUsize::new(0),
            engine: SetOnce::new(),
            vblank: SetOnce::new(),
            _vgpu: PhantomData,
        }? Error)
    }

    /// Create the workers (once `self` is pinned, before any vGPU exists).
    pub(crate) fn start(self: Pin<&Self>) -> Result {
        // SAFETY: `self` is pinned and the items are dropped with it.
        let engine = unsafe { CWork::new::<ENGINE, Self>(self.get_ref(), false) }?;
        // SAFETY: as above.
        let vblank = unsafe { CWork::new::<VBLANK, Self>(self.get_ref(), false) }?;
        self.engine.populate(engine);
        self.vblank.populate(vblank);
        Ok(())
    }

    /// Stop both workers for good (module unload, after every vGPU is gone).
    pub(crate) fn stop(&self) {
        if let Some(w) = self.engine.as_ref() {
            w.cancel_sync();
        }
        if let Some(w) = self.vblank.as_ref() {
            w.cancel_sync();
        }
    }

    /// Run the engines soon (from the trap path after an accepted submission).
    pub(crate) fn kick(&self) {
        if let Some(w) = self.engine.as_ref() {
            w.kick(0);
        }
    }

    /// Make the vblank work run at `deadline_ns` (or earlier, if it is
    /// already armed for an earlier time).  Every vGPU that wants vblank
    /// interrupts calls this after a register write; the work re-arms
    /// itself for the earliest next vblank of all vGPUs, and stops when none
    /// wants one.  The armed deadline and the timer change together under
    /// the item's spinlock, so two racing calls cannot leave the later
    /// deadline armed.
    pub(crate) fn arm_vblank(&self, deadline_ns: u64, now_ns: u64) {
        if let Some(w) = self.vblank.as_ref() {
            w.arm(deadline_ns, now_ns);
        }
    }

    /// The physical GGTT entry `index` as a page frame, if it maps one (the
    /// fault handlers' view: a short section of the GPU lock).
    pub(crate) fn phys_page(&self, index: u64) -> Option<u64> {
        let g = self.gpu.lock();
        let pte = *g.phys.get(usize::try_from(index).ok()?)?;
        pte.present().then_some(pte.page().0)
    }

    /// Publish (`Some`) or retract (`None`) the vGPU of scheduler slot `slot`.
    pub(crate) fn set_slot(&self, slot: SlotId, v: Option<&V>) {
        if let Some(e) = self.slots.lock().get_mut(usize::from(slot.0)) {
            *e = v.map_or(0, |v| core::ptr::from_ref(v) as usize);
        }
    }

    /// Call `f` on every live vGPU (under the slot table's lock: each stays
    /// alive for the call).
    fn for_each_vgpu(&self, mut f: impl FnMut(&V)) {
        let slots = self.slots.lock();
        for &addr in slots.iter() {
            if addr != 0 {
                // SAFETY: a non-zero entry is a live `V`: it clears its
                // entry (under this lock) before it is freed.
                f(unsafe { &*(addr as *const V) });
            }
        }
    }

    /// Signal what the engines raised (engine worker, GPU lock dropped);
    /// `failed` has a bit per slot that is now past its hang threshold.
    fn deliver(&self, report: &EngineReport<MAX_VGPUS>, failed: u64) {
        let slots = self.slots.lock();
        let live = |addr: usize| {
            // SAFETY: a non-zero entry is a live `V`: it clears its entry
            // (under this lock, held here) before it is freed.
            (addr != 0).then(|| unsafe { &*(addr as *const V) })
        };
        for (i, &addr) in slots.iter().enumerate() {
            if failed & (1 << i) != 0 {
                if let Some(v) = live(addr) {
                    v.failed();
                }
            }
        }
        for (slot, d) in report.pending() {
            let Some(&addr) = slots.get(usize::from(slot.0)) else {
                continue;
            };
            if let Some(v) = live(addr) {
                v.deliver(d);
            }
        }
    }

    /// Allocate a vGPU id and partition for type `ty` (all or nothing).
    pub(crate) fn alloc_vgpu(&self, ty: &VgpuType) -> Result<(u32, PartitionId, Partition)> {
        let mut st = self.partitions.lock();
        let live = st.partitioner.live() as u32;
        if live >= self.cfg.max_vgpus {
            return Err(ENOSPC);
        }
        let (pid, part) = st.partitioner.create(&ty.request()).map_err(|e| match e {
            PartitionError::BadRequest | PartitionError::BadLayout => EINVAL,
            _ => ENOSPC,
        })?;
        let bit = (!st.ids).trailing_zeros();
        st.ids |= 1 << bit;
        self.vgpus.fetch_add(1, Ordering::AcqRel);
        Ok((bit + 1, pid, part))
    }

    /// The data of a vGPU that `alloc_vgpu` counted is gone (its release
    /// has finished, or its creation failed).  The caller touches nothing
    /// of the parent afterwards: the parent may be freed at once.
    pub(crate) fn vgpu_released(&self) {
        self.vgpus.fetch_sub(1, Ordering::AcqRel);
    }

    /// Wait until every vGPU's data is released (parent removal, after the
    /// mdev core removed every vGPU; normally at once).  A vGPU points into
    /// the parent until then, so the parent must not go before.
    pub(crate) fn wait_vgpus_released(&self, name: &str) {
        let mut waited_ms = 0u64;
        while self.vgpus.load(Ordering::Acquire) != 0 {
            if waited_ms == 1000 {
                pr_info!(
                    "gvt-sim parent {name}: waiting for {} removed vGPUs to be released\n",
                    self.vgpus.load(Ordering::Acquire)
                );
            }
            kapi::sleep_ms(10);
            waited_ms += 10;
        }
    }

    pub(crate) fn free_vgpu(&self, id: u32, pid: PartitionId) {
        let mut st = self.partitions.lock();
        if st.partitioner.destroy(pid).is_err() {
            pr_err!("vGPU {id}: partition {pid:?} was not allocated\n");
        }
        if (1..=64).contains(&id) {
            st.ids &= !(1 << (id - 1));
        }
    }
}

/// `run_engines` calls per worker invocation: each is one GPU-lock section
/// bounded by [`WorkBudget::WORKER`]; the lock is dropped and the CPU offered
/// to others between them.
const CALLS: u32 = 8;

/// The engine worker: the engines never run in the trap path.
impl<V: SlotVgpu> WorkHandler<ENGINE> for Shared<V> {
    fn run(&self) {
        let mut idle = false;
        let mut worked = false;
        for _ in 0..CALLS {
            let (report, failed) = {
                let mut g = self.gpu.lock();
                let MediatedGpu { gpu, phys } = &mut *g;
                let report = gpu.run_engines(phys, &mut KHost, &KClock, WorkBudget::WORKER);
                // Slots past their hang threshold (paper §3.5.1): their VMMs
                // hear about it through the REQ irq.
                let mut failed = 0u64;
                if report.hangs > 0 {
                    for i in 0..MAX_VGPUS {
                        if gpu.scheduler().state(SlotId(i as u16)) == VgpuState::Failed {
                            failed |= 1 << i;
                        }
                    }
                }
                (report, failed)
            };
            // Hand the interrupts to each vGPU's work item (never waits on a
            // vGPU's lock), then let traps and other tasks in.
            self.deliver(&report, failed);
            idle = report.idle;
            worked |= report.work_ns > 0;
            if idle {
                break;
            }
            // No lock held.
            kapi::cond_resched();
        }
        if !idle {
            // More work: again at once (the workqueue and the cond_resched
            // above keep it preemptible).  Nothing ran but something waits (a
            // hang the watchdog is timing, a held TAIL): come back next tick
            // rather than spin.
            if let Some(w) = self.engine.as_ref() {
                w.kick(if worked { 0 } else { 1 });
            }
        }
    }
}

/// The vblank timer (paper §3.2, GVT-g's `vblank_timer_fn`): brings every
/// vGPU's frame counter up to now, latches and signals the vblank interrupts,
/// and runs again at the earliest next vblank any vGPU wants.
impl<V: SlotVgpu> WorkHandler<VBLANK> for Shared<V> {
    fn run(&self) {
        if let Some(w) = self.vblank.as_ref() {
            w.disarm();
        }
        let now = kapi::now_ns();
        let mut next = u64::MAX;
        self.for_each_vgpu(|v| {
            if let Some(d) = v.vblank_tick(now) {
                next = next.min(d);
            }
        });
        if next != u64::MAX {
            self.arm_vblank(next, now);
        }
    }
}
