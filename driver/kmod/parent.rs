// SPDX-License-Identifier: GPL-2.0
//! The gvt-sim parent device: a class device `gvt_rs/gvt-sim0` registered
//! with the mdev core, its vGPU types, and the partitioner that backs
//! `available_instances`.

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use kernel::prelude::*;
use kernel::sync::Mutex;
use kernel::types::Opaque;
use kernel::error::to_result;
use kernel::{bindings, c_str, new_mutex};

use crate::gvt_core::partition::{GmLayout, Partition, PartitionError, PartitionId, Partitioner};
use crate::gvt_core::vgpu_types::{self, SliceWriter, VgpuType, VgpuTypes};
use crate::gpu::{self, PhysGpu};
use crate::gvt_core::gpu::EngineReport;
use crate::gvt_core::sched::SlotId;
use crate::vfio;
use crate::vgpu::{self, Vgpu};

/// Most vGPUs (and so partition slots) a parent can hold.
pub(crate) const MAX_VGPUS: usize = 8;
/// Most vGPU types (1, 2, 4, 8 instances' worth of aperture).
const MAX_TYPES: usize = vgpu_types::MAX_TYPES;
const NAME_LEN: usize = 32;
/// Bytes at the top of the non-mappable GM that stay with the host.
const HOST_RESERVED_HIGH: u64 = 16 << 20;

/// The module parameters, as given.
#[derive(Clone, Copy)]
pub(crate) struct ParentConfig {
    pub(crate) aperture_mb: u32,
    pub(crate) gm_mb: u32,
    pub(crate) fences: u32,
    pub(crate) max_vgpus: u32,
    pub(crate) hang_threshold: u32,
}

impl ParentConfig {
    /// Check the parameters; a bad one fails the load with a clear log line.
    fn layout(&self) -> Result<GmLayout> {
        let a = self.aperture_mb;
        if !(16..=4096).contains(&a) || !a.is_power_of_two() {
            pr_err!("aperture_mb={a} is invalid: must be a power of two in 16..=4096\n");
            return Err(EINVAL);
        }
        if self.gm_mb > 4096 || u64::from(self.gm_mb) < u64::from(a) + (HOST_RESERVED_HIGH >> 20) + 1 {
            pr_err!(
                "gm_mb={} is invalid: must be <= 4096 and leave room above aperture_mb={a} for 16 MiB of host GM\n",
                self.gm_mb
            );
            return Err(EINVAL);
        }
        if !(1..=16).contains(&self.fences) {
            pr_err!("fences={} is invalid: must be in 1..=16\n", self.fences);
            return Err(EINVAL);
        }
        if !(1..=1000).contains(&self.hang_threshold) {
            pr_err!("hang_threshold={} is invalid: must be in 1..=1000\n", self.hang_threshold);
            return Err(EINVAL);
        }
        if !(1..=MAX_VGPUS as u32).contains(&self.max_vgpus) {
            pr_err!("max_vgpus={} is invalid: must be in 1..={MAX_VGPUS}\n", self.max_vgpus);
            return Err(EINVAL);
        }
        Ok(GmLayout {
            aperture_size: u64::from(a) << 20,
            total_gm: u64::from(self.gm_mb) << 20,
            fences: self.fences,
            host_reserved_high: HOST_RESERVED_HIGH,
        })
    }
}

/// What the parent's lock protects.
pub(crate) struct ParentState {
    pub(crate) partitioner: Partitioner<MAX_VGPUS>,
    /// vGPU ids in use (bit n: id n + 1).
    ids: u32,
}

/// The gvt-sim parent: C objects the mdev core points into (pinned, never
/// moved) and the shared allocation state.
#[pin_data]
pub(crate) struct Parent {
    class: AtomicPtr<bindings::class>,
    dev: Opaque<bindings::device>,
    mdev_parent: Opaque<vfio::mdev_parent>,
    driver: Opaque<vfio::mdev_driver>,
    types: [Opaque<vfio::mdev_type>; MAX_TYPES],
    type_ptrs: Opaque<[*mut vfio::mdev_type; MAX_TYPES]>,
    type_names: [[u8; NAME_LEN]; MAX_TYPES],
    type_info: VgpuTypes,
    ntypes: usize,
    pub(crate) cfg: ParentConfig,
    pub(crate) layout: GmLayout,
    #[pin]
    pub(crate) state: Mutex<ParentState>,
    /// The GPU lock: the mediated gvt-sim GPU and the physical GGTT.
    #[pin]
    pub(crate) gpu: Mutex<PhysGpu>,
    /// Scheduler slot -> live `Vgpu` (as an address), for the engine
    /// worker's interrupt deliveries.  A vGPU clears its entry before it is
    /// freed; the worker signals while holding this lock.
    #[pin]
    slots: Mutex<[usize; MAX_VGPUS]>,
    /// DMA ranges being unmapped (see [`crate::invalidate`]).
    #[pin]
    pub(crate) invalidating: crate::invalidate::Registry,
}

// SAFETY: the raw C objects are only touched through the kernel APIs that
// own their synchronisation (driver core, mdev core); the Rust state is behind
// `state`'s mutex.
unsafe impl Sync for Parent {}
// SAFETY: as above; nothing in `Parent` is tied to the creating thread.
unsafe impl Send for Parent {}

/// The one parent, for callbacks that only get C pointers.
static PARENT: AtomicPtr<Parent> = AtomicPtr::new(ptr::null_mut());

/// The registered parent.  Callbacks run only between `register` (which
/// publishes it before the mdev core can call back) and `unregister` (which
/// retracts it after the last callback can have returned).
pub(crate) fn get() -> &'static Parent {
    let p = PARENT.load(Ordering::Acquire);
    // SAFETY: see above: non-null and alive whenever a callback runs; the
    // `Pin<KBox<Parent>>` owned by the module outlives every registration.
    unsafe { &*p }
}

/// No-op release for the statically owned parent `struct device` (the memory
/// is owned by the module's `Parent`, freed after `device_unregister`).
unsafe extern "C" fn parent_dev_release(_dev: *mut bindings::device) {}

impl Parent {
    pub(crate) fn register(module: &'static ThisModule, cfg: ParentConfig) -> Result<Pin<KBox<Parent>>> {
        let layout = cfg.layout()?;
        let partitioner = Partitioner::new(layout).map_err(|e| {
            pr_err!("unusable graphics memory layout: {e:?}\n");
            EINVAL
        })?;
        let type_info = VgpuTypes::derive(&layout, cfg.max_vgpus);
        let ntypes = type_info.len().min(MAX_TYPES);
        if ntypes == 0 {
            pr_err!("no vGPU type fits aperture_mb={} gm_mb={}\n", cfg.aperture_mb, cfg.gm_mb);
            return Err(EINVAL);
        }
        let mut type_names = [[0u8; NAME_LEN]; MAX_TYPES];
        for (t, name) in type_info.iter().zip(type_names.iter_mut()) {
            let mut w = SliceWriter::new(&mut name[..NAME_LEN - 1]);
            let _ = t.write_sysfs_name(&mut w);
        }
        let phys = PhysGpu::new(layout.total_gm)?;
        let parent = KBox::pin_init(
            try_pin_init!(Parent {
                class: AtomicPtr::new(ptr::null_mut()),
                dev: Opaque::zeroed(),
                mdev_parent: Opaque::zeroed(),
                driver: Opaque::zeroed(),
                types: [Opaque::zeroed(), Opaque::zeroed(), Opaque::zeroed(), Opaque::zeroed()],
                type_ptrs: Opaque::new([ptr::null_mut(); MAX_TYPES]),
                type_names,
                type_info,
                ntypes,
                cfg,
                layout,
                state <- new_mutex!(ParentState { partitioner, ids: 0 }),
                gpu <- new_mutex!(phys),
                slots <- new_mutex!([0; MAX_VGPUS]),
                invalidating <- new_mutex!([crate::invalidate::Range::default(); crate::invalidate::SLOTS]),
            }),
            GFP_KERNEL,
        )?;
        PARENT.store(ptr::from_ref(&*parent).cast_mut(), Ordering::Release);
        if let Err(e) = parent.as_ref().register_c(module) {
            PARENT.store(ptr::null_mut(), Ordering::Release);
            return Err(e);
        }
        pr_info!(
            "gvt-sim parent gvt-sim0: aperture {} MiB, GM {} MiB, {} fences, up to {} vGPUs, {} types\n",
            cfg.aperture_mb,
            cfg.gm_mb,
            cfg.fences,
            cfg.max_vgpus,
            ntypes
        );
        Ok(parent)
    }

    /// Register driver, class, device and mdev parent; undo on failure.
    fn register_c(self: Pin<&Self>, module: &'static ThisModule) -> Result {
        let drv = self.driver.get();
        // SAFETY: `drv` points to zeroed, pinned memory owned by `self` that
        // lives until `unregister`; the strings are 'static.
        unsafe {
            (*drv).device_api = c_str!("vfio-pci").as_char_ptr();
            (*drv).max_instances = self.cfg.max_vgpus;
            (*drv).probe = Some(vgpu::mdev_probe);
            (*drv).remove = Some(vgpu::mdev_remove);
            (*drv).get_available = Some(type_get_available);
            (*drv).show_description = Some(type_show_description);
            (*drv).driver.name = c_str!("gvt_rs").as_char_ptr();
            (*drv).driver.owner = module.as_ptr();
            (*drv).driver.mod_name = c_str!("gvt_rs").as_char_ptr();
            (*drv).driver.dev_groups = ptr::addr_of!(vfio::gvt_rs_vgpu_groups).cast();
        }
        // SAFETY: `drv` is fully initialised above and stays pinned.
        to_result(unsafe { vfio::mdev_register_driver(drv) })?;

        // SAFETY: the name is a 'static C string.
        let class = unsafe { bindings::class_create(c_str!("gvt_rs").as_char_ptr()) };
        if class.is_null() || unsafe { vfio::gvt_rs_is_err(class.cast()) } {
            // SAFETY: registered just above.
            unsafe { vfio::mdev_unregister_driver(drv) };
            return Err(ENOMEM);
        }
        self.class.store(class, Ordering::Relaxed);

        let dev = self.dev.get();
        // SAFETY: `dev` is zeroed pinned memory owned by `self`; the class
        // outlives the device (destroyed after it in `unregister`).
        let ret = unsafe {
            bindings::device_initialize(dev);
            (*dev).class = class;
            (*dev).release = Some(parent_dev_release);
            bindings::dev_set_name(dev, c_str!("%s").as_char_ptr(), c_str!("gvt-sim0").as_char_ptr());
            bindings::device_add(dev)
        };
        if let Err(e) = to_result(ret) {
            // SAFETY: initialised above; put_device pairs with
            // device_initialize, the release callback is a no-op.
            unsafe {
                bindings::put_device(dev);
                bindings::class_destroy(class);
                vfio::mdev_unregister_driver(drv);
            }
            return Err(e);
        }

        let ptrs = self.type_ptrs.get();
        for i in 0..self.ntypes {
            let t = self.types[i].get();
            // SAFETY: `t` and `ptrs` are pinned memory owned by `self`; the
            // names are NUL-terminated arrays in `self`.
            unsafe {
                (*t).sysfs_name = self.type_names[i].as_ptr().cast();
                (*t).pretty_name = self.type_names[i].as_ptr().cast();
                (*ptrs)[i] = t;
            }
        }
        // SAFETY: all pointers are to pinned memory owned by `self`, which
        // outlives the registration (`unregister` undoes it first).
        let ret = unsafe {
            vfio::mdev_register_parent(
                self.mdev_parent.get(),
                dev.cast(),
                drv,
                ptrs.cast(),
                self.ntypes as u32,
            )
        };
        if let Err(e) = to_result(ret) {
            // SAFETY: reverse order of the successful registrations above.
            unsafe {
                bindings::device_unregister(dev);
                bindings::class_destroy(class);
                vfio::mdev_unregister_driver(drv);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Undo `register`: the mdev core removes every remaining vGPU first.
    pub(crate) fn unregister(self: Pin<&Self>) {
        // SAFETY: all of these were registered by `register_c`, in reverse order.
        unsafe {
            vfio::mdev_unregister_parent(self.mdev_parent.get());
        }
        gpu::stop();
        gpu::stop_vblank();
        // SAFETY: as above.
        unsafe {
            bindings::device_unregister(self.dev.get());
            bindings::class_destroy(self.class.load(Ordering::Relaxed));
            vfio::mdev_unregister_driver(self.driver.get());
        }
        PARENT.store(ptr::null_mut(), Ordering::Release);
        let st = self.state.lock();
        pr_info!("unloaded ({} vGPUs were live)\n", st.partitioner.live());
    }

    /// Publish (`Some`) or retract (`None`) the vGPU of scheduler slot `slot`.
    pub(crate) fn set_slot(&self, slot: SlotId, v: Option<&Vgpu>) {
        if let Some(e) = self.slots.lock().get_mut(usize::from(slot.0)) {
            *e = v.map_or(0, |v| core::ptr::from_ref(v) as usize);
        }
    }

    /// Call `f` on every live vGPU (under the slot table's lock: each stays
    /// alive for the call).
    pub(crate) fn for_each_vgpu(&self, mut f: impl FnMut(&Vgpu)) {
        let slots = self.slots.lock();
        for &addr in slots.iter() {
            if addr != 0 {
                // SAFETY: a non-zero entry is a live `Vgpu`: it clears its
                // entry (under this lock) before it is freed.
                f(unsafe { &*(addr as *const Vgpu) });
            }
        }
    }

    /// Signal what the engines raised (engine worker, GPU lock dropped);
    /// `failed` has a bit per slot that is now past its hang threshold.
    pub(crate) fn deliver(&self, report: &EngineReport<MAX_VGPUS>, failed: u32) {
        let slots = self.slots.lock();
        for (i, &addr) in slots.iter().enumerate() {
            if failed & (1 << i) != 0 && addr != 0 {
                // SAFETY: as below.
                unsafe { &*(addr as *const Vgpu) }.failed();
            }
        }
        for (slot, d) in report.pending() {
            let Some(&addr) = slots.get(usize::from(slot.0)) else { continue };
            if addr != 0 {
                // SAFETY: a non-zero entry is a live `Vgpu`: it clears its
                // entry (under this lock) before it is freed.
                unsafe { &*(addr as *const Vgpu) }.deliver(d);
            }
        }
    }

    /// Index of the type `mtype` points to.
    pub(crate) fn type_index(&self, mtype: *mut vfio::mdev_type) -> Option<usize> {
        (0..self.ntypes).find(|&i| self.types[i].get() == mtype)
    }

    pub(crate) fn vgpu_type(&self, i: usize) -> Option<&VgpuType> {
        self.type_info.get(i)
    }

    /// Allocate a vGPU id and partition for type `ty` (all or nothing).
    pub(crate) fn alloc_vgpu(&self, ty: &VgpuType) -> Result<(u32, PartitionId, Partition)> {
        let mut st = self.state.lock();
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
        Ok((bit + 1, pid, part))
    }

    pub(crate) fn free_vgpu(&self, id: u32, pid: PartitionId) {
        let mut st = self.state.lock();
        if st.partitioner.destroy(pid).is_err() {
            pr_err!("vGPU {id}: partition {pid:?} was not allocated\n");
        }
        if (1..=32).contains(&id) {
            st.ids &= !(1 << (id - 1));
        }
    }

}

/// `available_instances` of a type: what really fits in what is left.
unsafe extern "C" fn type_get_available(mtype: *mut vfio::mdev_type) -> u32 {
    let p = get();
    let Some(ty) = p.type_index(mtype).and_then(|i| p.vgpu_type(i)) else {
        return 0;
    };
    let st = p.state.lock();
    vgpu_types::available_instances(ty, &st.partitioner, st.partitioner.live() as u32, p.cfg.max_vgpus)
}

/// `description` of a type, in i915 GVT-g's format.
unsafe extern "C" fn type_show_description(mtype: *mut vfio::mdev_type, buf: *mut u8) -> isize {
    let p = get();
    let Some(ty) = p.type_index(mtype).and_then(|i| p.vgpu_type(i)) else {
        return EINVAL.to_errno() as isize;
    };
    // SAFETY: sysfs show buffers are PAGE_SIZE bytes.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, bindings::PAGE_SIZE as usize) };
    let mut w = SliceWriter::new(out);
    let _ = ty.write_description(&mut w);
    w.len() as isize
}
