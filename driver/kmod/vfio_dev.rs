// SPDX-License-Identifier: GPL-2.0
//! The VFIO mdev device layer: the `vfio_device_ops` a device implements
//! as a `#[vtable]` trait ([`VfioDeviceOps`]), the mdev parent's callbacks
//! as a trait ([`MdevParentOps`]), and the one adapter that holds the
//! `extern "C"` trampolines (in the style of `rust/kernel/miscdevice.rs`):
//! each turns the C pointers it gets into references once, with one
//! `// SAFETY:` justification, and calls the safe method.  [`VfioDevice`]
//! is the device handle the methods get: pin and unpin guest pages, zap
//! CPU mappings of the device file.  The C objects the mdev core points
//! into: [`MdevDriver`] (the one mdev driver of the module, a `static`),
//! [`MdevRegistration`] (one parent: its `mdev_parent` and types, on a
//! device someone else owns) and [`ClassDevice`] (a virtual device to put
//! a parent on where no real one is).
//!
//! Lifetimes the trampolines rely on: a device's data exists from `init`
//! (which calls [`MdevParentOps::create`]) to `release`; the VFIO core
//! calls no other op outside that window, and a CPU mapping of the device
//! file holds the file (so the device stays open and its data alive).  The
//! parent outlives every device: `mdev_unregister_parent` removes every
//! mdev first, and the owner then waits for every device's `release`
//! before it frees what the devices point into (`crate::parent`).

use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

use kernel::bindings;
use kernel::error::{from_err_ptr, to_result, VTABLE_DEFAULT_ERROR};
use kernel::prelude::*;
use kernel::types::Opaque;
use kernel::uaccess::{UserPtr, UserSlice};
use kernel::{c_str, container_of};

use crate::kapi::{Ops, Vma};
use crate::vfio;

/// Our VFIO device (`struct vfio_device`), as the device data's methods
/// see it: a handle that exists only between `init` and `release`.
#[derive(Clone, Copy)]
pub(crate) struct VfioDevice(NonNull<vfio::vfio_device>);

// SAFETY: every method is a VFIO or mm call that may run on any thread.
unsafe impl Send for VfioDevice {}
// SAFETY: as above.
unsafe impl Sync for VfioDevice {}

impl VfioDevice {
    /// Pin guest frame `gfn` for read and write (`vfio_pin_pages`); its
    /// page frame number, or the errno.
    pub(crate) fn pin(self, gfn: u64) -> core::result::Result<u64, Error> {
        // SAFETY: an initialised device (type invariant); VFIO checks that
        // the IOVA is DMA-mapped and the device open.
        let r = unsafe { vfio::gvt_rs_pin_gfn(self.0.as_ptr(), gfn) };
        if r < 0 {
            Err(Error::from_errno(r as i32))
        } else {
            Ok(r as u64)
        }
    }

    /// The next state on the way from `cur` to `new` of the VFIO migration
    /// FSM (`vfio_mig_get_next_state`: the arcs the uapi requires, through
    /// the states this device supports).
    pub(crate) fn mig_next_state(self, cur: u32, new: u32) -> Result<u32> {
        let mut next: vfio::vfio_device_mig_state = 0;
        // SAFETY: an initialised device with migration ops; `next` is a
        // valid out-pointer.
        to_result(unsafe { vfio::vfio_mig_get_next_state(self.0.as_ptr(), cur, new, &mut next) })?;
        Ok(next)
    }

    /// Drop a pin of `gfn` taken by [`VfioDevice::pin`].
    pub(crate) fn unpin(self, gfn: u64) {
        // SAFETY: as in `pin`.
        unsafe { vfio::gvt_rs_unpin_gfn(self.0.as_ptr(), gfn) };
    }

    /// Zap `[start, start + len)` of every CPU mapping of the device file
    /// (`unmap_mapping_range`: the next access faults).
    pub(crate) fn zap(self, start: u64, len: u64) {
        // SAFETY: an initialised device: its inode (every device file's
        // mapping) lives as long as the device.
        unsafe { vfio::gvt_rs_zap_range(self.0.as_ptr(), start, len) };
    }
}

/// A `linux/vfio.h` ioctl argument: plain `#[repr(C)]` data.
///
/// # Safety
/// Every bit pattern of the type is a valid value (no references, no
/// enums, no padding that could be read as a value).
pub(crate) unsafe trait Uapi: Default {}

// SAFETY: plain uapi structs of integers (and a union of integers).
unsafe impl Uapi for vfio::vfio_device_info {}
// SAFETY: as above.
unsafe impl Uapi for vfio::vfio_device_gfx_plane_info {}
// SAFETY: as above.
unsafe impl Uapi for vfio::vfio_irq_info {}
// SAFETY: as above.
unsafe impl Uapi for vfio::vfio_irq_set {}

/// The first `minsz` bytes of a `T` from user address `arg`, the rest default.
pub(crate) fn copy_in<T: Uapi>(arg: usize, minsz: usize) -> Result<T> {
    let mut t = T::default();
    let minsz = minsz.min(core::mem::size_of::<T>());
    // SAFETY: `t` has at least `minsz` bytes; every bit pattern is valid (`Uapi`).
    let bytes =
        unsafe { core::slice::from_raw_parts_mut(ptr::from_mut(&mut t).cast::<u8>(), minsz) };
    UserSlice::new(UserPtr::from_addr(arg), minsz)
        .reader()
        .read_slice(bytes)?;
    Ok(t)
}

/// The first `minsz` bytes of `t` to user address `arg`.
pub(crate) fn copy_out<T: Uapi>(arg: usize, t: &T, minsz: usize) -> Result {
    let minsz = minsz.min(core::mem::size_of::<T>());
    // SAFETY: `t` has at least `minsz` bytes of plain data (`Uapi`).
    let bytes = unsafe { core::slice::from_raw_parts(ptr::from_ref(t).cast::<u8>(), minsz) };
    UserSlice::new(UserPtr::from_addr(arg), minsz)
        .writer()
        .write_slice(bytes)
}

/// Check a `VFIO_DEVICE_SET_IRQS` header against an index of `max` vectors
/// (of `num_irqs` indexes) (`vfio_set_irqs_validate_and_prepare`); the
/// size of the data that follows it.
pub(crate) fn set_irqs_validate(
    hdr: &mut vfio::vfio_irq_set,
    max: u32,
    num_irqs: u32,
) -> Result<usize> {
    let mut data_size: usize = 0;
    // SAFETY: `hdr` is a valid header and `data_size` a valid output; the
    // helper only reads the header.
    to_result(unsafe {
        vfio::vfio_set_irqs_validate_and_prepare(hdr, max as i32, num_irqs as i32, &mut data_size)
    })?;
    Ok(data_size)
}

/// The capability chain of a `VFIO_DEVICE_GET_REGION_INFO` reply.
pub(crate) struct InfoCaps(*mut vfio::vfio_info_cap);

impl InfoCaps {
    /// A sparse-mmap capability with one area.
    pub(crate) fn add_sparse_mmap(&mut self, offset: u64, size: u64) -> Result {
        #[repr(C)]
        struct Sparse {
            hdr: vfio::vfio_region_info_cap_sparse_mmap,
            area: vfio::vfio_region_sparse_mmap_area,
        }
        let mut cap = Sparse {
            hdr: Default::default(),
            area: vfio::vfio_region_sparse_mmap_area { offset, size },
        };
        cap.hdr.header.id = vfio::VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16;
        cap.hdr.header.version = 1;
        cap.hdr.nr_areas = 1;
        // SAFETY: `self.0` is the core's chain; the header starts a
        // `size_of::<Sparse>()`-byte capability that the core copies.
        to_result(unsafe {
            vfio::vfio_info_add_capability(
                self.0,
                &mut cap.hdr.header,
                core::mem::size_of::<Sparse>(),
            )
        })
    }

    /// A region type capability.
    pub(crate) fn add_type(&mut self, type_: u32, subtype: u32) -> Result {
        let mut cap = vfio::vfio_region_info_cap_type {
            type_,
            subtype,
            ..Default::default()
        };
        cap.header.id = vfio::VFIO_REGION_INFO_CAP_TYPE as u16;
        cap.header.version = 1;
        let size = core::mem::size_of::<vfio::vfio_region_info_cap_type>();
        // SAFETY: as in `add_sparse_mmap`, for a `vfio_region_info_cap_type`.
        to_result(unsafe { vfio::vfio_info_add_capability(self.0, &mut cap.header, size) })
    }
}

/// The `vfio_device_ops` of a device, on its data (between `init` and
/// `release`).  The iommufd ops are VFIO's emulated-IOMMU helpers (set by
/// `gvt_rs_vfio_alloc_device`).
#[vtable]
pub(crate) trait VfioDeviceOps: Sized + Send + Sync + 'static {
    /// `release`: the last reference is gone; `this` is dropped after.
    fn release(this: Pin<KBox<Self>>);
    /// `open_device`.
    fn open(&self) -> Result;
    /// `close_device`.
    fn close(&self);
    /// `read` of `count` bytes at `*pos` into user address `ubuf`.
    fn read(&self, _ubuf: usize, _count: usize, _pos: &mut i64) -> isize {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
    /// `write` of `count` bytes from user address `ubuf` at `*pos`.
    fn write(&self, _ubuf: usize, _count: usize, _pos: &mut i64) -> isize {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
    /// `ioctl`: the value returned to user space.
    fn ioctl(&self, _cmd: u32, _arg: usize) -> Result<isize> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
    /// `get_region_info_caps`: the core validated `argsz` and copies
    /// `info` and the capability chain back.
    fn region_info(&self, _info: &mut vfio::vfio_region_info, _caps: &mut InfoCaps) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
    /// `mmap` (called with the mm lock held for write).
    fn mmap(&self, _vma: &DeviceVma<'_, Self>) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
    /// `request`: the device is being removed while a VMM holds it.
    fn request(&self, _count: u32) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
    /// `dma_unmap`: the VMM unmapped `[iova, iova + len)`; every pin in it
    /// must be dropped before returning.
    fn dma_unmap(&self, _iova: u64, _len: u64) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
    /// `vfio_migration_ops.migration_set_state` (VFIO migration v2): move
    /// to `new`; a data file for the VMM when the arc opens one.  Having
    /// it makes the device migratable (STOP_COPY, P2P, PRE_COPY).
    fn mig_set_state(&self, _new: u32) -> Result<Option<*mut bindings::file>> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
    /// `migration_get_state`.
    fn mig_get_state(&self) -> u32 {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
    /// `migration_get_data_size`: bytes STOP_COPY will produce at most.
    fn mig_data_size(&self) -> usize {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// A mapping of the device file being set up: its private data may be the
/// device's own data, which every mapping outlives (it holds the file).
pub(crate) struct DeviceVma<'a, T> {
    vma: Vma<'a>,
    owner: &'a T,
}

impl<T: 'static> DeviceVma<'_, T> {
    pub(crate) fn vma(&self) -> &Vma<'_> {
        &self.vma
    }

    /// A PFN mapping whose faults `H` handles with the device's data.
    pub(crate) fn set_pfnmap<H: crate::kapi::PfnFault<T>>(&self, read_only: bool) -> Result {
        // SAFETY: the mapping holds the device file open, so no `release`
        // (which frees `owner`) runs while it exists.
        unsafe { self.vma.set_pfnmap::<T, H>(self.owner, read_only) }
    }
}

/// The object `vfio_alloc_device` allocates: `vfio_device` first, then the
/// device's data (set by `init`, taken back by `release`).
#[repr(C)]
struct Holder<T> {
    vdev: vfio::vfio_device,
    data: *const T,
}

/// The callbacks of an mdev parent and its types.
pub(crate) trait MdevParentOps: Sized + Send + Sync + 'static {
    type Device: VfioDeviceOps;
    /// Create a device of type `type_index` (`vfio_device_ops.init`).
    fn create(&'static self, type_index: usize, dev: VfioDevice)
        -> Result<Pin<KBox<Self::Device>>>;
    /// `available_instances` of type `type_index`.
    fn available(&self, type_index: usize) -> u32;
    /// `description` of type `type_index`, written into `out`; its length.
    fn describe(&self, type_index: usize, out: &mut [u8]) -> usize;
}

struct Adapter<P>(PhantomData<P>);

impl<P: MdevParentOps> Adapter<P> {
    const OPS: Ops<vfio::vfio_device_ops> = Ops(vfio::vfio_device_ops {
        name: c"gvt_rs".as_ptr().cast_mut().cast(),
        init: Some(Self::init),
        release: Some(Self::release),
        open_device: Some(Self::open),
        close_device: Some(Self::close),
        read: if P::Device::HAS_READ {
            Some(Self::read)
        } else {
            None
        },
        write: if P::Device::HAS_WRITE {
            Some(Self::write)
        } else {
            None
        },
        ioctl: if P::Device::HAS_IOCTL {
            Some(Self::ioctl)
        } else {
            None
        },
        get_region_info_caps: if P::Device::HAS_REGION_INFO {
            Some(Self::region_info)
        } else {
            None
        },
        mmap: if P::Device::HAS_MMAP {
            Some(Self::mmap)
        } else {
            None
        },
        request: if P::Device::HAS_REQUEST {
            Some(Self::request)
        } else {
            None
        },
        dma_unmap: if P::Device::HAS_DMA_UNMAP {
            Some(Self::dma_unmap)
        } else {
            None
        },
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

    const fn ops() -> &'static Ops<vfio::vfio_device_ops> {
        &Self::OPS
    }

    const MIG_OPS: Ops<vfio::vfio_migration_ops> = Ops(vfio::vfio_migration_ops {
        migration_set_state: Some(Self::mig_set_state),
        migration_get_state: Some(Self::mig_get_state),
        migration_get_data_size: Some(Self::mig_data_size),
    });

    const fn mig_ops() -> &'static Ops<vfio::vfio_migration_ops> {
        &Self::MIG_OPS
    }

    unsafe extern "C" fn mig_set_state(
        vdev: *mut vfio::vfio_device,
        new: vfio::vfio_device_mig_state,
    ) -> *mut bindings::file {
        // SAFETY: an op between init and release.
        match unsafe { Self::data(vdev) }.mig_set_state(new) {
            Ok(Some(f)) => f,
            Ok(None) => core::ptr::null_mut(),
            Err(e) => e.to_ptr(),
        }
    }

    unsafe extern "C" fn mig_get_state(
        vdev: *mut vfio::vfio_device,
        state: *mut vfio::vfio_device_mig_state,
    ) -> i32 {
        // SAFETY: an op between init and release; the VFIO core passes a
        // valid out-pointer.
        unsafe { *state = Self::data(vdev).mig_get_state() };
        0
    }

    unsafe extern "C" fn mig_data_size(
        vdev: *mut vfio::vfio_device,
        len: *mut kernel::ffi::c_ulong,
    ) -> i32 {
        // SAFETY: as in `mig_get_state`.
        unsafe { *len = Self::data(vdev).mig_data_size() as _ };
        0
    }

    /// # Safety
    /// `vdev` is a device of this adapter between `init` and `release` (true
    /// for every op but those two).
    unsafe fn data<'a>(vdev: *mut vfio::vfio_device) -> &'a P::Device {
        // SAFETY: `vdev` is the first field of a `Holder` (repr(C)); `data`
        // was set by `init` and stays valid until `release`.
        unsafe { &*(*vdev.cast::<Holder<P::Device>>()).data }
    }

    /// `mdev_driver.probe`: allocate the VFIO device (its `init` creates the
    /// device's data) and register it with an emulated IOMMU.
    unsafe extern "C" fn probe(mdev: *mut vfio::mdev_device) -> i32 {
        // SAFETY: the mdev core passes a live device.
        let dev = unsafe { vfio::gvt_rs_mdev_dev(mdev) };
        let size = core::mem::size_of::<Holder<P::Device>>();
        // SAFETY: the ops table is 'static; the size covers `Holder`, whose
        // first field is the `vfio_device`.
        let vdev = match from_err_ptr(unsafe {
            vfio::gvt_rs_vfio_alloc_device(size, dev, &Self::ops().0)
        }) {
            Ok(vdev) => vdev,
            Err(e) => return e.to_errno(),
        };
        // SAFETY: `vdev` is initialised (its `init` succeeded).
        let ret = unsafe { vfio::vfio_register_emulated_iommu_dev(vdev) };
        if ret != 0 {
            // SAFETY: drops the allocation reference; `release` frees the data.
            unsafe { vfio::gvt_rs_vfio_put_device(vdev) };
            return ret;
        }
        // SAFETY: `dev` is the mdev's device; drvdata is ours.
        unsafe { vfio::gvt_rs_set_drvdata(dev, vdev.cast()) };
        0
    }

    /// `mdev_driver.remove`: waits (signalling REQ through `request`) until
    /// the VMM has released the device, then drops it.
    unsafe extern "C" fn remove(mdev: *mut vfio::mdev_device) {
        // SAFETY: drvdata was set to our `vfio_device` by `probe`.
        let vdev = unsafe { vfio::gvt_rs_get_drvdata(vfio::gvt_rs_mdev_dev(mdev)) }
            .cast::<vfio::vfio_device>();
        // SAFETY: registered by `probe`; put pairs with the allocation.
        unsafe {
            vfio::vfio_unregister_group_dev(vdev);
            vfio::gvt_rs_vfio_put_device(vdev);
        }
    }

    /// The parent and index of mdev type `mtype`.
    ///
    /// # Safety
    /// `mtype` is one of the types of a live [`MdevRegistration<P>`] that
    /// `mdev_register_parent` registered (it set `mtype->parent`).
    unsafe fn type_of(mtype: *mut vfio::mdev_type) -> Option<(&'static P, usize)> {
        // SAFETY: `parent` points into the registration (the caller's
        // guarantee); the registration lives inside its owner `P`, which
        // outlives every callback (see the module documentation).
        let reg = unsafe {
            &*container_of!(
                (*mtype).parent.cast::<Opaque<vfio::mdev_parent>>(),
                MdevRegistration<P>,
                mdev_parent
            )
        };
        let owner = reg.owner.load(Ordering::Acquire);
        let index = (0..reg.ntypes).find(|&i| reg.types[i].get() == mtype)?;
        // SAFETY: set by `register` to the registration's owner, which
        // outlives the registration.
        Some((unsafe { &*owner }, index))
    }

    /// `vfio_device_ops.init`: the device's data, from its parent.
    unsafe extern "C" fn init(vdev: *mut vfio::vfio_device) -> i32 {
        // SAFETY: `vdev->dev` is the mdev device passed to vfio_alloc_device;
        // the mdev core set its `type` before probing.
        let Some((parent, index)) =
            (unsafe { Self::type_of((*vfio::gvt_rs_to_mdev_device((*vdev).dev)).type_) })
        else {
            return EINVAL.to_errno();
        };
        // INVARIANT: `vdev` is initialised up to its ops; a `VfioDevice` is
        // handed only to the data, which `release` drops.
        let Some(dev) = NonNull::new(vdev).map(VfioDevice) else {
            return EINVAL.to_errno();
        };
        match parent.create(index, dev) {
            Ok(data) => {
                // SAFETY: ownership moves to the raw pointer; `release`
                // rebuilds the box, and nothing moves the value in between.
                let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(data) });
                // SAFETY: `vdev` is the first field of a zeroed `Holder`.
                unsafe { (*vdev.cast::<Holder<P::Device>>()).data = raw };
                if P::Device::HAS_MIG_SET_STATE {
                    // SAFETY: `vdev` is being initialised by us, before
                    // registration; the ops table is 'static.
                    unsafe {
                        (*vdev).migration_flags = vfio::VFIO_MIGRATION_STOP_COPY
                            | vfio::VFIO_MIGRATION_P2P
                            | vfio::VFIO_MIGRATION_PRE_COPY;
                        (*vdev).mig_ops = &Self::mig_ops().0;
                    }
                }
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// `vfio_device_ops.release`: last reference gone; drop the data.
    unsafe extern "C" fn release(vdev: *mut vfio::vfio_device) {
        // SAFETY: `vdev` is the first field of our `Holder`.
        let raw = unsafe { (*vdev.cast::<Holder<P::Device>>()).data };
        if raw.is_null() {
            return;
        }
        // SAFETY: `raw` came from `KBox::into_raw` in `init`; no op runs
        // after release; the value never moved.
        let data = unsafe { Pin::new_unchecked(KBox::from_raw(raw.cast_mut())) };
        P::Device::release(data);
    }

    unsafe extern "C" fn open(vdev: *mut vfio::vfio_device) -> i32 {
        // SAFETY: an op between init and release.
        match unsafe { Self::data(vdev) }.open() {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    unsafe extern "C" fn close(vdev: *mut vfio::vfio_device) {
        // SAFETY: an op between init and release.
        unsafe { Self::data(vdev) }.close();
    }

    unsafe extern "C" fn read(
        vdev: *mut vfio::vfio_device,
        buf: *mut u8,
        count: usize,
        ppos: *mut i64,
    ) -> isize {
        // SAFETY: an op between init and release; the VFIO core passes a
        // valid position pointer.
        let (data, pos) = unsafe { (Self::data(vdev), &mut *ppos) };
        data.read(buf as usize, count, pos)
    }

    unsafe extern "C" fn write(
        vdev: *mut vfio::vfio_device,
        buf: *const u8,
        count: usize,
        ppos: *mut i64,
    ) -> isize {
        // SAFETY: as in `read`.
        let (data, pos) = unsafe { (Self::data(vdev), &mut *ppos) };
        data.write(buf as usize, count, pos)
    }

    unsafe extern "C" fn ioctl(vdev: *mut vfio::vfio_device, cmd: u32, arg: usize) -> isize {
        // SAFETY: an op between init and release.
        match unsafe { Self::data(vdev) }.ioctl(cmd, arg) {
            Ok(v) => v,
            Err(e) => e.to_errno() as isize,
        }
    }

    unsafe extern "C" fn region_info(
        vdev: *mut vfio::vfio_device,
        info: *mut vfio::vfio_region_info,
        caps: *mut vfio::vfio_info_cap,
    ) -> i32 {
        // SAFETY: an op between init and release; the VFIO core passes a
        // valid info struct and its capability chain.
        let (data, info) = unsafe { (Self::data(vdev), &mut *info) };
        match data.region_info(info, &mut InfoCaps(caps)) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    unsafe extern "C" fn mmap(
        vdev: *mut vfio::vfio_device,
        vma: *mut bindings::vm_area_struct,
    ) -> i32 {
        // SAFETY: an op between init and release; `vma` is the mapping
        // being set up by mmap(2).
        let (owner, vma) = unsafe { (Self::data(vdev), Vma::from_raw(vma)) };
        match owner.mmap(&DeviceVma { vma, owner }) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    unsafe extern "C" fn request(vdev: *mut vfio::vfio_device, count: u32) {
        // SAFETY: an op between init and release.
        unsafe { Self::data(vdev) }.request(count);
    }

    unsafe extern "C" fn dma_unmap(vdev: *mut vfio::vfio_device, iova: u64, len: u64) {
        // SAFETY: an op between init and release.
        unsafe { Self::data(vdev) }.dma_unmap(iova, len);
    }

    /// `available_instances` of a type.
    unsafe extern "C" fn get_available(mtype: *mut vfio::mdev_type) -> u32 {
        // SAFETY: the mdev core passes one of our registered types.
        match unsafe { Self::type_of(mtype) } {
            Some((p, i)) => p.available(i),
            None => 0,
        }
    }

    /// `description` of a type.
    unsafe extern "C" fn show_description(mtype: *mut vfio::mdev_type, buf: *mut u8) -> isize {
        // SAFETY: as in `get_available`.
        let Some((p, i)) = (unsafe { Self::type_of(mtype) }) else {
            return EINVAL.to_errno() as isize;
        };
        // SAFETY: sysfs show buffers are PAGE_SIZE bytes.
        let out = unsafe { core::slice::from_raw_parts_mut(buf, bindings::PAGE_SIZE as usize) };
        p.describe(i, out) as isize
    }
}

/// The show/store bodies of a device's sysfs attributes: the table
/// (`gvt_rs_vgpu_groups`, the driver's `dev_groups`) is built with the
/// `DEVICE_ATTR` macros in `gvt_rs_helpers.c`, whose callbacks call
/// `gvt_rs_attr_show`/`gvt_rs_attr_store` with the attribute's number
/// ([`device_attr_trampolines!`] defines those two).
pub(crate) trait DeviceAttrs {
    /// Attribute `attr` as text in `out`; its length.
    fn show(&self, attr: u32, out: &mut [u8]) -> Result<usize>;
    /// Store `input` into attribute `attr`; the bytes consumed.
    fn store(&self, attr: u32, input: &[u8]) -> Result<usize>;
}

/// Define the C entry points of [`DeviceAttrs`] for the devices of mdev
/// parent `$parent` (once per module).
macro_rules! device_attr_trampolines {
    ($parent:ty) => {
        #[no_mangle]
        unsafe extern "C" fn gvt_rs_attr_show(
            dev: *mut kernel::bindings::device,
            attr: u32,
            buf: *mut u8,
        ) -> isize {
            // SAFETY: the attribute callbacks of our driver's devices pass
            // their arguments on (see `attr_show`).
            unsafe { $crate::vfio_dev::attr_show::<$parent>(dev, attr, buf) }
        }

        #[no_mangle]
        unsafe extern "C" fn gvt_rs_attr_store(
            dev: *mut kernel::bindings::device,
            attr: u32,
            buf: *const u8,
            count: usize,
        ) -> isize {
            // SAFETY: as above (see `attr_store`).
            unsafe { $crate::vfio_dev::attr_store::<$parent>(dev, attr, buf, count) }
        }
    };
}
pub(crate) use device_attr_trampolines;

/// `show` of an attribute.
///
/// # Safety
/// `dev` is an mdev device bound to the driver of an
/// [`MdevRegistration<P>`] (its attribute groups exist only then); `buf` is
/// a sysfs show buffer (PAGE_SIZE bytes).
pub(crate) unsafe fn attr_show<P: MdevParentOps>(
    dev: *mut bindings::device,
    attr: u32,
    buf: *mut u8,
) -> isize
where
    P::Device: DeviceAttrs,
{
    // SAFETY: `dev` is bound to our driver (the caller's guarantee).
    let Some(d) = (unsafe { device_data::<P>(dev) }) else {
        return ENODEV.to_errno() as isize;
    };
    // SAFETY: sysfs show buffers are PAGE_SIZE bytes (the caller's guarantee).
    let out = unsafe { core::slice::from_raw_parts_mut(buf, bindings::PAGE_SIZE as usize) };
    match d.show(attr, out) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// `store` of an attribute.
///
/// # Safety
/// As for [`attr_show`]; `buf` holds `count` bytes.
pub(crate) unsafe fn attr_store<P: MdevParentOps>(
    dev: *mut bindings::device,
    attr: u32,
    buf: *const u8,
    count: usize,
) -> isize
where
    P::Device: DeviceAttrs,
{
    // SAFETY: as in `attr_show`.
    let Some(d) = (unsafe { device_data::<P>(dev) }) else {
        return ENODEV.to_errno() as isize;
    };
    // SAFETY: sysfs passes `count` valid bytes (the caller's guarantee).
    let input = unsafe { core::slice::from_raw_parts(buf, count) };
    match d.store(attr, input) {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// The device data of a device of our mdev driver, from its `struct
/// device`; `None` while unbound.
///
/// # Safety
/// `dev` is an mdev device bound to the driver of an
/// [`MdevRegistration<P>`].
unsafe fn device_data<'a, P: MdevParentOps>(dev: *mut bindings::device) -> Option<&'a P::Device> {
    // SAFETY: drvdata is our `vfio_device` while the driver is bound (the
    // caller's guarantee).
    let vdev = unsafe { vfio::gvt_rs_get_drvdata(dev.cast()) }.cast::<vfio::vfio_device>();
    if vdev.is_null() {
        return None;
    }
    // SAFETY: a bound device is between init and release.
    Some(unsafe { Adapter::<P>::data(vdev) })
}

/// Most types of a parent.
pub(crate) const MAX_TYPES: usize = crate::gvt_core::vgpu_types::MAX_TYPES;
/// Bytes of a type's name (NUL included).
pub(crate) const NAME_LEN: usize = 32;

/// The module's mdev driver (`struct mdev_driver`): the one driver every
/// vGPU of every parent binds to.  A `static` of the module, registered at
/// load ([`MdevDriver::register`]) before any parent and unregistered at
/// unload ([`MdevDriver::unregister`]) after the last parent is gone.
pub(crate) struct MdevDriver<P> {
    driver: Opaque<vfio::mdev_driver>,
    _parent: PhantomData<fn(&P)>,
}

// SAFETY: the C object is only touched through the driver core and the mdev
// core, which own its synchronisation, and by `register` before that.
unsafe impl<P> Sync for MdevDriver<P> {}

impl<P: MdevParentOps> MdevDriver<P> {
    /// An unregistered driver (zeroed), for a `static`.
    pub(crate) const fn new() -> Self {
        Self {
            driver: Opaque::zeroed(),
            _parent: PhantomData,
        }
    }

    fn as_ptr(&self) -> *mut vfio::mdev_driver {
        self.driver.get()
    }

    /// Register the driver with the mdev bus.  Called once, at module load,
    /// before any parent registers; `unregister` undoes it.
    pub(crate) fn register(
        &'static self,
        module: &'static ThisModule,
        max_instances: u32,
    ) -> Result {
        let drv = self.as_ptr();
        // SAFETY: `drv` points to the zeroed `static`, which nothing else
        // touches before it is registered; the strings are 'static.
        unsafe {
            (*drv).device_api = c_str!("vfio-pci").as_char_ptr();
            (*drv).max_instances = max_instances;
            (*drv).probe = Some(Adapter::<P>::probe);
            (*drv).remove = Some(Adapter::<P>::remove);
            (*drv).get_available = Some(Adapter::<P>::get_available);
            (*drv).show_description = Some(Adapter::<P>::show_description);
            (*drv).driver.name = c_str!("gvt_rs").as_char_ptr();
            (*drv).driver.owner = module.as_ptr();
            (*drv).driver.mod_name = c_str!("gvt_rs").as_char_ptr();
            (*drv).driver.dev_groups = ptr::addr_of!(vfio::gvt_rs_vgpu_groups).cast();
        }
        // SAFETY: `drv` is fully initialised above and, a `static`, never moves.
        to_result(unsafe { vfio::mdev_register_driver(drv) })
    }

    /// Undo `register` (module unload, after every parent unregistered).
    pub(crate) fn unregister(&'static self) {
        // SAFETY: registered by `register`; no parent points at it any more.
        unsafe { vfio::mdev_unregister_driver(self.as_ptr()) };
    }
}

/// A class device to stand as an mdev parent where no real device does
/// (`/sys/devices/virtual/<class>/<name>`, e.g. `gvt_rs/gvt-sim0`).
/// Pinned in its owner; [`ClassDevice::register`] adds it and
/// [`ClassDevice::unregister`] takes it away again, after the mdev parent
/// on it is unregistered.
#[pin_data]
pub(crate) struct ClassDevice {
    class: AtomicPtr<bindings::class>,
    dev: Opaque<bindings::device>,
}

// SAFETY: the C objects are only touched through the driver core, which
// owns their synchronisation, after `register`.
unsafe impl Sync for ClassDevice {}
// SAFETY: as above; nothing is tied to the creating thread.
unsafe impl Send for ClassDevice {}

/// No-op release for the class device (its memory is owned by the
/// `ClassDevice`, freed after `device_unregister`).
unsafe extern "C" fn class_dev_release(_dev: *mut bindings::device) {}

impl ClassDevice {
    /// Nothing registered yet.
    pub(crate) fn new() -> Self {
        Self {
            class: AtomicPtr::new(ptr::null_mut()),
            dev: Opaque::zeroed(),
        }
    }

    /// Create class `class` and add the device `name` in it; undo on failure.
    pub(crate) fn register(self: Pin<&Self>, class: &'static CStr, name: &'static CStr) -> Result {
        // SAFETY: the name is a 'static C string.
        let cls = match from_err_ptr(unsafe { bindings::class_create(class.as_char_ptr()) }) {
            Ok(c) if !c.is_null() => c,
            Ok(_) => return Err(ENOMEM),
            Err(e) => return Err(e),
        };
        self.class.store(cls, Ordering::Relaxed);
        let dev = self.dev.get();
        // SAFETY: `dev` is zeroed pinned memory owned by `self`; the class
        // outlives the device (destroyed after it in `unregister`).
        let ret = unsafe {
            bindings::device_initialize(dev);
            (*dev).class = cls;
            (*dev).release = Some(class_dev_release);
            bindings::dev_set_name(dev, c_str!("%s").as_char_ptr(), name.as_char_ptr());
            bindings::device_add(dev)
        };
        if let Err(e) = to_result(ret) {
            // SAFETY: initialised above; put_device pairs with
            // device_initialize, the release callback is a no-op.
            unsafe {
                bindings::put_device(dev);
                bindings::class_destroy(cls);
            }
            return Err(e);
        }
        Ok(())
    }

    /// The device, to register an mdev parent on (valid until `unregister`).
    pub(crate) fn as_raw(&self) -> *mut bindings::device {
        self.dev.get()
    }

    /// Undo `register`.
    pub(crate) fn unregister(self: Pin<&Self>) {
        // SAFETY: registered by `register`, undone in reverse order.
        unsafe {
            bindings::device_unregister(self.dev.get());
            bindings::class_destroy(self.class.load(Ordering::Relaxed));
        }
    }
}

/// One mdev parent's C objects: the `mdev_parent` and its types, on a
/// device that someone else owns (a [`ClassDevice`], or a PCI function
/// bound to the module's PCI driver).  Pinned inside its owner `P`,
/// registered by [`MdevRegistration::register`] and undone by
/// [`MdevRegistration::unregister`] before the owner goes.
#[pin_data]
pub(crate) struct MdevRegistration<P> {
    owner: AtomicPtr<P>,
    mdev_parent: Opaque<vfio::mdev_parent>,
    types: [Opaque<vfio::mdev_type>; MAX_TYPES],
    type_ptrs: Opaque<[*mut vfio::mdev_type; MAX_TYPES]>,
    names: [[u8; NAME_LEN]; MAX_TYPES],
    ntypes: usize,
}

// SAFETY: the C objects are only touched through the kernel APIs that own
// their synchronisation (driver core, mdev core), after `register`.
unsafe impl<P: Sync> Sync for MdevRegistration<P> {}
// SAFETY: as above; nothing is tied to the creating thread.
unsafe impl<P: Send> Send for MdevRegistration<P> {}

impl<P: MdevParentOps> MdevRegistration<P> {
    /// The objects of a parent with `ntypes` types named by `names`
    /// (NUL-terminated); nothing registered yet.
    pub(crate) fn new(names: [[u8; NAME_LEN]; MAX_TYPES], ntypes: usize) -> Self {
        Self {
            owner: AtomicPtr::new(ptr::null_mut()),
            mdev_parent: Opaque::zeroed(),
            types: [const { Opaque::zeroed() }; MAX_TYPES],
            type_ptrs: Opaque::new([ptr::null_mut(); MAX_TYPES]),
            names,
            ntypes: ntypes.min(MAX_TYPES),
        }
    }

    /// Register the mdev parent on `dev`, its vGPUs bound to `driver`.
    /// `owner` (which holds `self`) is what the callbacks get.
    ///
    /// # Safety
    /// `dev` is a live device that stays registered, and referenced, until
    /// [`MdevRegistration::unregister`] has returned (the mdev core keeps
    /// it as the parent and puts the vGPUs under it).
    pub(crate) unsafe fn register(
        self: Pin<&Self>,
        owner: &P,
        dev: *mut bindings::device,
        driver: &'static MdevDriver<P>,
    ) -> Result {
        self.owner
            .store(ptr::from_ref(owner).cast_mut(), Ordering::Release);
        let ptrs = self.type_ptrs.get();
        for i in 0..self.ntypes {
            let t = self.types[i].get();
            // SAFETY: `t` and `ptrs` are pinned memory owned by `self`; the
            // names are NUL-terminated arrays in `self`.
            unsafe {
                (*t).sysfs_name = self.names[i].as_ptr().cast();
                (*t).pretty_name = self.names[i].as_ptr().cast();
                (*ptrs)[i] = t;
            }
        }
        // SAFETY: all pointers are to pinned memory owned by `self`, which
        // outlives the registration (`unregister` undoes it first); the
        // driver is a registered `static`; `dev` outlives the registration
        // (the caller's guarantee).
        to_result(unsafe {
            vfio::mdev_register_parent(
                self.mdev_parent.get(),
                dev.cast(),
                driver.as_ptr(),
                ptrs.cast(),
                self.ntypes as u32,
            )
        })
    }

    /// Undo `register`: the mdev core removes every remaining device first
    /// (waiting, with VFIO's request, for each VMM to let go).
    pub(crate) fn unregister(self: Pin<&Self>) {
        // SAFETY: registered by `register`.
        unsafe { vfio::mdev_unregister_parent(self.mdev_parent.get()) };
    }
}
