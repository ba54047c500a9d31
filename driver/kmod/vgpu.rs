// SPDX-License-Identifier: GPL-2.0
//! One vGPU as a VFIO device: the mdev probe/remove pair, the
//! `vfio_device_ops` table, and the per-vGPU sysfs group.  Region accesses go
//! to `gvt_core::vgpu::Vgpu`; this file only moves bytes across the
//! user/kernel boundary and manages kernel objects (pages, eventfds).
//!
//! Region layout (vfio-pci convention): region `i` starts at file offset
//! `i << 40`.  After the nine PCI regions come the EDID region (index 9,
//! `VFIO_REGION_TYPE_GFX`/`VFIO_REGION_SUBTYPE_GFX_EDID`, mirrored into the
//! guest's EDID page in BAR0) and the display region (index 10, read-only,
//! mmap-able: the pages of the plane the last `VFIO_DEVICE_QUERY_GFX_PLANE`
//! reported).  dma-buf planes (`VFIO_DEVICE_GET_GFX_DMABUF`) hold a page
//! reference per framebuffer page.
//!
//! Every user mapping of guest memory (aperture, display region, dma-buf) is
//! a PFN mapping (`VM_PFNMAP`, `vmf_insert_pfn`): the frames are the VMM's
//! anonymous or shmem RAM, never pages of the device file, so they must not
//! reach the shared-file fault path.  The PTEs hold no reference: aperture
//! and display mappings are zapped before the page they map is unpinned,
//! under the state lock their faults take; a dma-buf keeps its own references.  Lock rule: never touch user memory while holding a vGPU's
//! state lock (a user buffer may be the vGPU's own aperture mapping, whose
//! fault handler takes that lock).  Lock order: `state` and `irqs` are never
//! held together; `virqfd_lock` is taken alone (disabling an irqfd waits for
//! its callback, which takes `irqs`).
//!
//! The command register is honoured the way vfio-pci honours it on real
//! devices: with memory decode off, BAR region reads/writes fail with EIO,
//! aperture faults raise SIGBUS, and turning decode off (or a reset) zaps
//! every aperture mapping so the next CPU access faults and is checked
//! again.  INTx follows `linux/vfio.h`: maskable, automasked after it fires,
//! never raised while the guest set `INTX_DISABLE`; mask/unmask also work
//! through eventfds (vfio's virqfd, as QEMU's KVM resamplefd path uses).

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kernel::page::Page;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex, MutexGuard};
use kernel::types::Opaque;
use kernel::uaccess::{UserPtr, UserSlice};
use kernel::error::to_result;
use kernel::{bindings, new_mutex};

use crate::gpu::{self, KAlloc, KClock, KCpu, KGuest, KHost, PhysGpu};
use crate::gvt_core::display::{vfio as gfx, GfxCaps, NoPlane};
use crate::gvt_core::edid::{self, EdidEvent, EdidRegion};
use crate::gvt_core::gpu::{SubmitOutcome, SHADOW_PAGES_PER_VGPU};
use crate::gvt_core::irq::Delivery;
use crate::gvt_core::sched::Clock as _;
use crate::gvt_core::vblank::{DEFAULT_PERIOD_NS, PIPEA_FRMCOUNT, PIPEA_FRMTMSTMP};
use crate::gvt_core::mem::{HostMemory, HostPage, PAGE_SIZE};
use crate::gvt_core::partition::{Partition, PartitionId};
use crate::gvt_core::sched::VgpuId;
use crate::gvt_core::stats::VgpuState;
use crate::gvt_core::vgpu_types::Resolution;
use crate::gvt_core::vgpu::{
    storage_sizes, AccessError, Env, Vgpu as CoreVgpu, VgpuParams, VgpuStorage, BAR0_SIZE, CONFIG_SIZE,
    DEFAULT_PPGTT_TABLES,
};
use crate::gvt_core::vgpu_types::SliceWriter;
use crate::parent;
use crate::vfio;

/// The kernel services of one vGPU's calls into the core.
macro_rules! env {
    ($v:expr) => {
        Env { host: &mut KHost, alloc: &mut KAlloc, clock: &KClock, guest: &mut KGuest($v.vdev), cpu: &mut KCpu($v.vdev) }
    };
}

const REGION_SHIFT: u32 = 40;
const PAGE_SHIFT: u32 = 12;
const REGION_MASK: u64 = (1u64 << REGION_SHIFT) - 1;
const BAR0: u32 = vfio::VFIO_PCI_BAR0_REGION_INDEX;
const BAR2: u32 = vfio::VFIO_PCI_BAR2_REGION_INDEX;
const CONFIG: u32 = vfio::VFIO_PCI_CONFIG_REGION_INDEX;
const NUM_REGIONS: u32 = vfio::VFIO_PCI_NUM_REGIONS;
/// The EDID region (`VFIO_REGION_TYPE_GFX` / `VFIO_REGION_SUBTYPE_GFX_EDID`).
const EDID_REGION: u32 = NUM_REGIONS;
/// The display region: the current primary plane's pages (region planes).
const DISPLAY_REGION: u32 = NUM_REGIONS + 1;
/// Regions in `VFIO_DEVICE_GET_INFO`: the PCI ones, then EDID and display.
const ALL_REGIONS: u32 = NUM_REGIONS + 2;
const NUM_IRQS: u32 = vfio::VFIO_PCI_NUM_IRQS;
/// Bytes moved per bounce through the kernel (kept off the stack).
const CHUNK: usize = 256;

// VFIO ioctl numbers: _IO(VFIO_TYPE, VFIO_BASE + n) (linux/vfio.h).
const fn vfio_io(n: u32) -> u32 {
    ((vfio::VFIO_TYPE as u32) << 8) | (vfio::VFIO_BASE + n)
}
const VFIO_DEVICE_GET_INFO: u32 = vfio_io(7);
const VFIO_DEVICE_GET_IRQ_INFO: u32 = vfio_io(9);
const VFIO_DEVICE_SET_IRQS: u32 = vfio_io(10);
const VFIO_DEVICE_RESET: u32 = vfio_io(11);
const VFIO_DEVICE_QUERY_GFX_PLANE: u32 = vfio_io(14);
const VFIO_DEVICE_GET_GFX_DMABUF: u32 = vfio_io(15);

/// The object `vfio_alloc_device` allocates: `vfio_device` first.
#[repr(C)]
pub(crate) struct VgpuDev {
    vdev: vfio::vfio_device,
    vgpu: *mut Vgpu,
}

/// Interrupt eventfds the VMM wired with `VFIO_DEVICE_SET_IRQS`.
struct Irqs {
    ctx: [*mut bindings::eventfd_ctx; NUM_IRQS as usize],
    intx_masked: bool,
}

// SAFETY: eventfd contexts are refcounted kernel objects usable from any thread.
unsafe impl Send for Irqs {}

struct State {
    /// The mediator's view of this vGPU; `None` once destroyed (release).
    /// Boxed (3 KiB): `vgpu_init` runs deep in the mdev create path, on a
    /// 16 KiB kernel stack.
    core: Option<KBox<CoreVgpu>>,
    /// Virtual registers: 2 MiB, as GVT-g's vreg.
    vregs: KVVec<u32>,
    /// What the guest wrote in its GGTT slices, and the physical entries.
    ggtt_guest: KVVec<u64>,
    ggtt_shadow: KVVec<u64>,
    /// The shadow PPGTT's snapshot of the guest tables.
    ppgtt_snap: KVVec<u64>,
    /// Where unmapped GGTT entries of this vGPU point (owned here, freed
    /// after the core has unmapped it).
    #[allow(dead_code)]
    scratch: Page,
    /// Host-owned pages of its shadow rings and batches (owned here, as above).
    #[allow(dead_code)]
    shadow: KVec<Page>,
    /// The VMM's EDID region and the monitor it defines (mirrored into the
    /// vregs' guest EDID page at creation, on hotplug and after reset).
    /// Boxed: 1 KiB that would otherwise sit in `vgpu_init`'s stack frame.
    edid: KBox<EdidRegion>,
    /// Why the last primary-plane query found no plane (logged on change).
    no_plane: Option<NoPlane>,
}

impl State {
    /// The core vGPU and its storage, lent together.
    fn split(&mut self) -> Result<(&mut CoreVgpu, VgpuStorage<'_>)> {
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
    fn split_storage(&mut self) -> Result<((), VgpuStorage<'_>)> {
        Ok((
            (),
            VgpuStorage {
                vregs: &mut self.vregs,
                ggtt_guest: &mut self.ggtt_guest,
                ggtt_shadow: &mut self.ggtt_shadow,
                ppgtt_snap: &mut self.ppgtt_snap,
            },
        ))
    }

    fn core(&self) -> Result<&CoreVgpu> {
        self.core.as_deref().ok_or(ENODEV)
    }

    /// Show the monitor to the guest (its EDID page in BAR0).
    fn mirror_edid(&mut self) {
        self.edid.mirror_into(&mut self.vregs);
    }
}

#[pin_data]
pub(crate) struct Vgpu {
    /// Our VFIO device (pins, mapping invalidation).
    vdev: *mut vfio::vfio_device,
    /// The scheduler slot of the mediated GPU.
    slot: VgpuId,
    id: u32,
    pid: PartitionId,
    part: Partition,
    type_idx: usize,
    /// The type's resolution: the default monitor's mode and the largest
    /// the VMM may set through the EDID region.
    resolution: Resolution,
    /// Aperture accesses outside this vGPU's slice (reads 0, writes dropped).
    ballooned: AtomicU64,
    /// The VMM was told (REQ irq) that this vGPU failed; cleared on reset.
    failed_told: AtomicBool,
    /// The task that is inside `bar0_write` (which may pin guest pages),
    /// or 0.  A guest can point a GGTT entry at the VMM's own mapping of
    /// this vGPU's aperture: pinning it faults into our fault handler, in
    /// the same task, with the state lock held.  The handler refuses that
    /// fault (SIGBUS: the pin fails, the PTE goes to scratch) instead of
    /// deadlocking the host.
    pinning: AtomicUsize,
    /// Faults refused by the `pinning` guard (sysfs `gvt/stats`
    /// `self_map_faults`): a guest pointed a GGTT entry at the VMM's own
    /// mapping of this vGPU's aperture or display region.
    self_faults: AtomicU64,
    /// Aperture and display faults that found the state lock busy and were
    /// retried without the mm lock (sysfs `gvt/stats` `fault_retries`): see
    /// [`fault_lock`].
    fault_retries: AtomicU64,
    /// dma-buf planes offered (sysfs `gvt/dmabuf`; on by default).  A VMM
    /// without OpenGL (QEMU `display=on` with no GL display) needs them off:
    /// QEMU takes dma-buf planes whenever the probe says they exist.
    dmabuf: AtomicBool,
    /// dma-buf fds handed out by `VFIO_DEVICE_GET_GFX_DMABUF` (sysfs
    /// `gvt/display`: shows which display path the VMM took).
    dmabufs_exported: AtomicU64,
    /// Pages of this vGPU's dma-bufs faulted in through a CPU mapping of
    /// them (sysfs `gvt/display`: a consumer read the pixels).  Shared with
    /// each buffer, which may outlive the vGPU.
    dmabuf_page_faults: Arc<AtomicU64>,
    #[pin]
    state: Mutex<State>,
    #[pin]
    irqs: Mutex<Irqs>,
    /// INTx mask (0) and unmask (1) irqfds.  vfio's virqfd code owns these
    /// slots (it clears them under its own lock when the eventfd closes);
    /// we only hand their addresses to `vfio_virqfd_{enable,disable}`.
    virqfd: [Opaque<*mut vfio::virqfd>; 2],
    /// Serialises virqfd enable/disable.
    #[pin]
    virqfd_lock: Mutex<()>,
}

const VIRQFD_MASK: usize = 0;
const VIRQFD_UNMASK: usize = 1;
const INTX: u32 = vfio::VFIO_PCI_INTX_IRQ_INDEX;

// SAFETY: `vdev` is only passed to VFIO functions that may be called from
// any thread; everything mutable is behind the locks.
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

    /// Signal what the mediator raised for this vGPU (its MSI, or INTx when
    /// MSI is off), as the guest's config space says.
    pub(crate) fn deliver(&self, d: Delivery) {
        let sig = match self.state.lock().core.as_mut() {
            Some(core) => core.signal(d),
            None => return,
        };
        if sig.msi {
            self.signal(vfio::VFIO_PCI_MSI_IRQ_INDEX);
        }
        if sig.intx == Some(true) {
            self.signal(INTX);
        }
    }

    /// The vblank timer at `now`: bring the frame counter up to date, signal
    /// the vblank interrupt if it latched; returns when this vGPU next wants
    /// the timer (None: it does not).
    pub(crate) fn vblank_tick(&self, now: u64) -> Option<u64> {
        let mut st = self.state.lock();
        let Ok((core, mut storage)) = st.split() else { return None };
        let d = core.vblank_tick(&parent::get().gpu.lock().gpu, &mut storage, now);
        let next = core.vblank_deadline(now);
        let sig = core.signal(d);
        drop(st);
        if sig.msi {
            self.signal(vfio::VFIO_PCI_MSI_IRQ_INDEX);
        }
        if sig.intx == Some(true) {
            self.signal(INTX);
        }
        next
    }

    /// The vblank period follows the monitor's mode (open, hotplug); called
    /// with the state lock held.
    fn apply_refresh(st: &mut State) {
        let period = st.edid.mode().and_then(|m| m.frame_period_ns()).unwrap_or(DEFAULT_PERIOD_NS);
        if let Some(core) = st.core.as_mut() {
            core.set_refresh_period(KClock.now_ns(), period);
        }
    }

    /// The device raises interrupt `index` (or the VMM loops one back with
    /// `SET_IRQS` `ACTION_TRIGGER`).  INTx is level-triggered and automasked:
    /// it is not raised while masked or while the guest's command register
    /// has `INTX_DISABLE`, and raising it masks it until the VMM unmasks.
    fn signal(&self, index: u32) {
        if index == INTX && self.state.lock().core().map_or(true, |c| c.cfg().intx_disabled()) {
            return;
        }
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

    fn set_eventfd(&self, index: u32, ctx: *mut bindings::eventfd_ctx) {
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
    fn set_virqfd(&self, which: usize, fd: i32) -> Result {
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

    fn dmabuf(&self) -> bool {
        self.dmabuf.load(Ordering::Relaxed)
    }

    fn set_intx_mask(&self, masked: bool) {
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

/// Zap every CPU mapping of the aperture region (BAR2) of `vdev`, so the
/// next access faults and is checked again (memory decode off, reset).
fn zap_aperture(vdev: *mut vfio::vfio_device) {
    let start = u64::from(BAR2) << REGION_SHIFT;
    // SAFETY: `vdev` is a live, initialised vfio device (all callers run
    // between init and release).
    unsafe { vfio::gvt_rs_zap_range(vdev, start, 1u64 << REGION_SHIFT) };
}

/// Zap every CPU mapping of the display region of `vdev` (the shown plane
/// changed, or the pages behind it may have), so the VMM faults again.
fn zap_display(vdev: *mut vfio::vfio_device) {
    let start = u64::from(DISPLAY_REGION) << REGION_SHIFT;
    // SAFETY: as in `zap_aperture`.
    unsafe { vfio::gvt_rs_zap_range(vdev, start, 1u64 << REGION_SHIFT) };
}

/// The running task, as an address (for [`Vgpu::pinning`]).
fn current_task() -> usize {
    kernel::task::Task::current_raw() as usize
}

/// # Safety
/// `vdev` must be the `vfio_device` of a `VgpuDev` whose `init` succeeded and
/// whose `release` has not run (true for every vfio op and sysfs callback).
unsafe fn vgpu_of<'a>(vdev: *mut vfio::vfio_device) -> &'a Vgpu {
    // SAFETY: `vdev` is the first field of `VgpuDev` (repr(C)); `vgpu` was set
    // by `init` and stays valid until `release`.
    unsafe { &*(*vdev.cast::<VgpuDev>()).vgpu }
}

fn errno(e: Error) -> isize {
    e.to_errno() as isize
}

fn access_err(e: AccessError) -> Error {
    match e {
        AccessError::Fault => EFAULT,
        _ => EINVAL,
    }
}

// ---- mdev driver ---------------------------------------------------------

/// A C ops table in a `static`: read-only after compilation.
#[repr(transparent)]
struct Ops<T>(T);
// SAFETY: the tables are never written; their raw pointers point to 'static
// data and functions.
unsafe impl<T> Sync for Ops<T> {}

static OPS: Ops<vfio::vfio_device_ops> = Ops(vfio::vfio_device_ops {
    name: c"gvt_rs".as_ptr().cast_mut().cast(),
    init: Some(vgpu_init),
    release: Some(vgpu_release),
    open_device: Some(vgpu_open),
    close_device: Some(vgpu_close),
    read: Some(vgpu_read),
    write: Some(vgpu_write),
    ioctl: Some(vgpu_ioctl),
    get_region_info_caps: Some(vgpu_region_info),
    mmap: Some(vgpu_mmap),
    request: Some(vgpu_request),
    dma_unmap: Some(vgpu_dma_unmap),
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
    let dmabuf_page_faults = Arc::new(AtomicU64::new(0), GFP_KERNEL)?;
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
        let mut g = p.gpu.lock();
        let PhysGpu { gpu, phys } = &mut *g;
        let mut storage = VgpuStorage {
            vregs: &mut vregs,
            ggtt_guest: &mut ggtt_guest,
            ggtt_shadow: &mut ggtt_shadow,
            ppgtt_snap: &mut ppgtt_snap,
        };
        let mut env = Env { host: &mut KHost, alloc: &mut KAlloc, clock: &KClock, guest: &mut KGuest(vdev), cpu: &mut KCpu(vdev) };
        let mut core_box = core_box;
        if let Err(e) = CoreVgpu::create_in(&mut core_box, gpu, phys, params, &mut storage, &mut env) {
            pr_warn!("vGPU {id}: the mediator refused it: {e:?}\n");
            return Err(ENOSPC);
        }
        // SAFETY: `create_in` succeeded: it initialised the slot.
        let core = unsafe { core_box.assume_init() };
        // The per-VM hang threshold (module parameter, paper §3.5.1).
        let _ = gpu.scheduler_mut().set_hang_limit(core.slot(), p.cfg.hang_threshold);
        core
    };
    let slot = core.slot();
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
            ballooned: AtomicU64::new(0),
            failed_told: AtomicBool::new(false),
            pinning: AtomicUsize::new(0),
            self_faults: AtomicU64::new(0),
            fault_retries: AtomicU64::new(0),
            dmabuf: AtomicBool::new(true),
            dmabufs_exported: AtomicU64::new(0),
            dmabuf_page_faults,
            state <- new_mutex!(state),
            irqs <- new_mutex!(Irqs { ctx: [ptr::null_mut(); NUM_IRQS as usize], intx_masked: false }),
            virqfd: [Opaque::new(ptr::null_mut()), Opaque::new(ptr::null_mut())],
            virqfd_lock <- new_mutex!(()),
        }),
        GFP_KERNEL,
    );
    let v = match v {
        Ok(v) => v,
        Err(e) => {
            // The state (and its core vGPU) was dropped with the failed
            // init; give the slot back.  Nothing is pinned yet.
            let mut g = p.gpu.lock();
            let PhysGpu { gpu, phys } = &mut *g;
            let _ = gpu.destroy_slot(phys, &mut KHost, &KClock, slot);
            return Err(e);
        }
    };
    p.set_slot(slot, Some(&v));
    // SAFETY: ownership moves to the raw pointer; `vgpu_release` rebuilds the
    // box, and nothing moves the value in between.
    Ok(KBox::into_raw(unsafe { Pin::into_inner_unchecked(v) }))
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
    p.set_slot(v.slot, None);
    {
        let mut st = v.state.lock();
        let core = st.core.take();
        if let (Some(core), Ok((_, mut storage))) = (core, st.split_storage()) {
            let mut g = p.gpu.lock();
            let PhysGpu { gpu, phys } = &mut *g;
            KBox::into_inner(core).destroy(gpu, phys, &mut storage, &mut env!(v));
        }
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
    v.reset();
    Vgpu::apply_refresh(&mut v.state.lock());
    0
}

unsafe extern "C" fn vgpu_close(vdev: *mut vfio::vfio_device) {
    // SAFETY: called between init and release.
    let v = unsafe { vgpu_of(vdev) };
    v.disable_irqs();
    // Drop every pin while the device is still open (VFIO requires it).
    v.reset();
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
/// and PPGTT entry using a frame in it drops its pin.
unsafe extern "C" fn vgpu_dma_unmap(vdev: *mut vfio::vfio_device, iova: u64, len: u64) {
    // SAFETY: called between init and release.
    let v = unsafe { vgpu_of(vdev) };
    let mut st = v.state.lock();
    let Ok((core, mut storage)) = st.split() else { return };
    let mut g = parent::get().gpu.lock();
    let PhysGpu { gpu, phys } = &mut *g;
    // Frames behind the display region may be unpinned: zap it first (its
    // faults wait for the state lock).
    zap_display(v.vdev);
    core.dma_unmap(gpu, phys, &mut storage, &mut env!(v), iova, len);
}

impl Vgpu {
    /// Device reset (open, close, VFIO_DEVICE_RESET): power-on state, every
    /// pin and shadow released, its engine work dropped.
    fn reset(&self) {
        {
            let mut st = self.state.lock();
            let Ok((core, mut storage)) = st.split() else { return };
            // Reset unpins everything: zap the display region first (the
            // core invalidates the aperture pages itself).
            zap_display(self.vdev);
            let mut g = parent::get().gpu.lock();
            let PhysGpu { gpu, phys } = &mut *g;
            core.reset(gpu, phys, &mut storage, &mut env!(self));
            drop(g);
            // Reset cleared the vregs: show the monitor again.
            st.mirror_edid();
        }
        self.failed_told.store(false, Ordering::Relaxed);
        zap_aperture(self.vdev);
    }
}

// ---- region read / write ---------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Read,
    Write,
}

/// One region access of at most `CHUNK` bytes, on a kernel buffer.
/// Returns whether the access turned memory decode off (the caller then
/// zaps the aperture mappings, outside the state lock).
fn access(v: &Vgpu, index: u32, off: u64, buf: &mut [u8], dir: Dir) -> Result<bool> {
    let len = buf.len() as u64;
    match index {
        CONFIG => {
            let end = off.checked_add(len).ok_or(EINVAL)?;
            if end > CONFIG_SIZE {
                return Err(EINVAL);
            }
            let mut st = v.state.lock();
            let core = st.core.as_mut().ok_or(ENODEV)?;
            match dir {
                Dir::Read => core.cfg_read_span(off as u32, buf).map(|()| false).map_err(access_err),
                Dir::Write => {
                    let was_on = core.cfg().memory_enabled();
                    core.cfg_write(off as u32, buf).map_err(access_err)?;
                    Ok(was_on && !core.cfg().memory_enabled())
                }
            }
        }
        BAR0 => {
            let mut st = v.state.lock();
            let (core, mut storage) = st.split()?;
            // A BAR with memory decode off does not respond (vfio-pci: EIO).
            if !core.cfg().memory_enabled() {
                return Err(EIO);
            }
            // The guest's EDID page is read-only: what the monitor says.
            if dir == Dir::Write && edid_page(off, len) {
                return Ok(false);
            }
            // A GGTT write under the shown plane may unpin a page the display
            // region maps: zap first (faults wait for this lock, and then see
            // the new entry).
            if dir == Dir::Write && off >= GGTT_BAR0 {
                let index = (off - GGTT_BAR0) / 8;
                if core.shown_plane().is_some_and(|p| p.ggtt_indices().contains(&index)) {
                    zap_display(v.vdev);
                }
            }
            let mut g = parent::get().gpu.lock();
            let PhysGpu { gpu, phys } = &mut *g;
            match dir {
                Dir::Read => {
                    // The frame counters are brought up to date when read
                    // (no timer runs for a guest that only polls them).
                    let lazy = (u64::from(PIPEA_FRMCOUNT)..u64::from(PIPEA_FRMTMSTMP) + 4).contains(&off);
                    let d = if lazy { core.vblank_tick(gpu, &mut storage, KClock.now_ns()) } else { Delivery::default() };
                    core.bar0_read(gpu, &mut storage, off, buf).map_err(access_err)?;
                    if d != Delivery::default() {
                        drop(g);
                        let sig = core.signal(d);
                        drop(st);
                        if sig.msi {
                            v.signal(vfio::VFIO_PCI_MSI_IRQ_INDEX);
                        }
                        if sig.intx == Some(true) {
                            v.signal(INTX);
                        }
                    }
                }
                Dir::Write => {
                    v.pinning.store(current_task(), Ordering::Relaxed);
                    let out = core.bar0_write(gpu, phys, &mut storage, &mut env!(v), off, buf);
                    v.pinning.store(0, Ordering::Relaxed);
                    let out = out.map_err(access_err)?;
                    drop(g);
                    let sig = core.signal(out.delivery);
                    // A register write may have enabled the vblank interrupt
                    // or the plane: the vblank timer runs while one is wanted.
                    let vblank = if off < GGTT_BAR0 {
                        let now = KClock.now_ns();
                        core.vblank_deadline(now).map(|d| (d, now))
                    } else {
                        None
                    };
                    drop(st);
                    if let Some((deadline, now)) = vblank {
                        gpu::arm_vblank(deadline, now);
                    }
                    if sig.msi {
                        v.signal(vfio::VFIO_PCI_MSI_IRQ_INDEX);
                    }
                    if sig.intx == Some(true) {
                        v.signal(INTX);
                    }
                    if matches!(out.submit(), Some(SubmitOutcome::Accepted { .. } | SubmitOutcome::Held)) {
                        gpu::kick();
                    }
                }
            }
            Ok(false)
        }
        BAR2 => {
            if !v.state.lock().core()?.cfg().memory_enabled() {
                return Err(EIO);
            }
            aperture_access(v, off, buf, dir).map(|()| false)
        }
        EDID_REGION => {
            let mut st = v.state.lock();
            let r = match dir {
                Dir::Read => st.edid.read(off, buf).map(|()| None),
                Dir::Write => st.edid.write(off, buf),
            };
            match r {
                Ok(Some(EdidEvent::Hotplug { connected })) => {
                    // Hotplug: the guest sees the new monitor (and a new
                    // hotplug count) in its EDID page; the refresh follows the mode.
                    st.mirror_edid();
                    Vgpu::apply_refresh(&mut st);
                    let mode = st.edid.mode();
                    drop(st);
                    match mode {
                        Some(m) if connected => pr_info!("vGPU {}: monitor plugged in, {}x{}\n", v.id, m.width, m.height),
                        _ => pr_info!("vGPU {}: monitor unplugged\n", v.id),
                    }
                    Ok(false)
                }
                Ok(None) => Ok(false),
                Err(e) => Err(Error::from_errno(-e.errno())),
            }
        }
        DISPLAY_REGION => {
            if dir == Dir::Write {
                return Err(EINVAL);
            }
            let mut st = v.state.lock();
            let (core, mut storage) = st.split()?;
            core.display_read(&mut storage, &KHost, off, buf).map(|()| false).map_err(|_| EINVAL)
        }
        _ => Err(EINVAL),
    }
}

/// Whether a BAR0 access of `len` bytes at `off` touches the guest's EDID page.
fn edid_page(off: u64, len: u64) -> bool {
    let base = u64::from(edid::guest::BASE);
    off < base + u64::from(edid::guest::SIZE) && off.saturating_add(len) > base
}

/// Start of the GGTT view in BAR0.
const GGTT_BAR0: u64 = crate::gvt_core::mmio::GGTT_VIEW_BASE;

/// Aperture (BAR2) access through the region instead of the mapping: the same
/// pages; outside the vGPU's slice reads return 0 and writes are dropped.
fn aperture_access(v: &Vgpu, off: u64, buf: &mut [u8], dir: Dir) -> Result {
    let p = parent::get();
    let len = buf.len() as u64;
    let end = off.checked_add(len).ok_or(EINVAL)?;
    if end > p.layout.aperture_size {
        return Err(EINVAL);
    }
    let mut done = 0usize;
    while done < buf.len() {
        let a = off + done as u64;
        let in_page = (PAGE_SIZE - a % PAGE_SIZE).min((buf.len() - done) as u64) as usize;
        let piece = &mut buf[done..done + in_page];
        if v.part.aperture.contains(a, in_page as u64) {
            let po = (a % PAGE_SIZE) as usize;
            let mut st = v.state.lock();
            let (core, mut storage) = st.split()?;
            // The page the GGTT maps there: the guest's, or its scratch.
            let page = core.aperture_fault(&mut storage, a).map_err(|_| EINVAL)?;
            match dir {
                Dir::Read => KHost.read(page, po, piece).map_err(|_| EFAULT)?,
                Dir::Write => KHost.write(page, po, piece).map_err(|_| EFAULT)?,
            }
        } else {
            v.ballooned.fetch_add(1, Ordering::Relaxed);
            if dir == Dir::Read {
                piece.fill(0);
            }
        }
        done += in_page;
    }
    Ok(())
}

/// Split a VFIO read/write into region accesses, bouncing through a kernel
/// buffer so no user memory is touched under the state lock.
fn rw(vdev: *mut vfio::vfio_device, ubuf: usize, count: usize, ppos: *mut i64, dir: Dir) -> isize {
    // SAFETY: called between init and release.
    let v = unsafe { vgpu_of(vdev) };
    // SAFETY: the VFIO core passes a valid position pointer.
    let pos = unsafe { *ppos } as u64;
    let index = (pos >> REGION_SHIFT) as u32;
    let off = pos & REGION_MASK;
    // A zero-length transfer moves nothing (read(2)/write(2), vfio-pci).
    if count == 0 {
        return 0;
    }
    if pos >> REGION_SHIFT >= u64::from(ALL_REGIONS) {
        return errno(EINVAL);
    }
    // Register-like regions take single, naturally aligned accesses; memory
    // and the config space's read path take spans.
    if index == BAR0 && !matches!(count, 1 | 2 | 4 | 8) {
        return errno(EINVAL);
    }
    if index == CONFIG && dir == Dir::Write && !matches!(count, 1 | 2 | 4) {
        return errno(EINVAL);
    }
    let mut bounce = [0u8; CHUNK];
    let mut done = 0usize;
    while done < count {
        let n = (count - done).min(CHUNK);
        let user = UserSlice::new(UserPtr::from_addr(ubuf + done), n);
        let piece = &mut bounce[..n];
        let r = match dir {
            Dir::Read => access(v, index, off + done as u64, piece, dir).and_then(|_| user.writer().write_slice(piece)),
            Dir::Write => user.reader().read_slice(piece).and_then(|()| access(v, index, off + done as u64, piece, dir)).map(|decode_off| {
                if decode_off {
                    zap_aperture(vdev);
                }
            }),
        };
        if let Err(e) = r {
            return if done > 0 { done as isize } else { errno(e) };
        }
        done += n;
    }
    // SAFETY: as above.
    unsafe { *ppos += done as i64 };
    done as isize
}

unsafe extern "C" fn vgpu_read(vdev: *mut vfio::vfio_device, buf: *mut u8, count: usize, ppos: *mut i64) -> isize {
    rw(vdev, buf as usize, count, ppos, Dir::Read)
}

unsafe extern "C" fn vgpu_write(vdev: *mut vfio::vfio_device, buf: *const u8, count: usize, ppos: *mut i64) -> isize {
    rw(vdev, buf as usize, count, ppos, Dir::Write)
}

// ---- region info -------------------------------------------------------------

/// `vfio_device_ops.get_region_info_caps`: the VFIO core validated argsz and
/// copies `info` and the capability chain back.
unsafe extern "C" fn vgpu_region_info(
    vdev: *mut vfio::vfio_device,
    info: *mut vfio::vfio_region_info,
    caps: *mut vfio::vfio_info_cap,
) -> i32 {
    // SAFETY: called between init and release.
    let v = unsafe { vgpu_of(vdev) };
    let p = parent::get();
    // SAFETY: the VFIO core passes a valid info struct.
    let info = unsafe { &mut *info };
    let rw = vfio::VFIO_REGION_INFO_FLAG_READ | vfio::VFIO_REGION_INFO_FLAG_WRITE;
    let (size, flags) = match info.index {
        CONFIG => (CONFIG_SIZE, rw),
        BAR0 => (BAR0_SIZE, rw),
        BAR2 => (p.layout.aperture_size, rw | vfio::VFIO_REGION_INFO_FLAG_MMAP | vfio::VFIO_REGION_INFO_FLAG_CAPS),
        i if i < NUM_REGIONS => (0, 0),
        EDID_REGION => (edid::EDID_REGION_SIZE, rw | vfio::VFIO_REGION_INFO_FLAG_CAPS),
        // Read-only: the VMM shows the guest's screen, it does not draw.
        DISPLAY_REGION => match v.state.lock().core() {
            Ok(c) => (c.display_region_size(), vfio::VFIO_REGION_INFO_FLAG_READ | vfio::VFIO_REGION_INFO_FLAG_MMAP),
            Err(e) => return e.to_errno(),
        },
        _ => return EINVAL.to_errno(),
    };
    info.offset = u64::from(info.index) << REGION_SHIFT;
    info.size = size;
    info.flags = flags;
    if info.index == BAR2 {
        // Only this vGPU's slice may be mapped: everything else is ballooned.
        #[repr(C)]
        struct Sparse {
            hdr: vfio::vfio_region_info_cap_sparse_mmap,
            area: vfio::vfio_region_sparse_mmap_area,
        }
        let mut cap = Sparse {
            hdr: Default::default(),
            area: vfio::vfio_region_sparse_mmap_area { offset: v.part.aperture.base, size: v.part.aperture.size },
        };
        cap.hdr.header.id = vfio::VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16;
        cap.hdr.header.version = 1;
        cap.hdr.nr_areas = 1;
        // SAFETY: `caps` is the core's chain; the header is the start of a
        // `size`-byte capability that the core copies.
        let ret = unsafe { vfio::vfio_info_add_capability(caps, &mut cap.hdr.header, core::mem::size_of::<Sparse>()) };
        if ret != 0 {
            return ret;
        }
    }
    if info.index == EDID_REGION {
        let mut cap = vfio::vfio_region_info_cap_type {
            type_: vfio::VFIO_REGION_TYPE_GFX,
            subtype: vfio::VFIO_REGION_SUBTYPE_GFX_EDID,
            ..Default::default()
        };
        cap.header.id = vfio::VFIO_REGION_INFO_CAP_TYPE as u16;
        cap.header.version = 1;
        // SAFETY: as above, for a `vfio_region_info_cap_type`.
        return unsafe {
            vfio::vfio_info_add_capability(caps, &mut cap.header, core::mem::size_of::<vfio::vfio_region_info_cap_type>())
        };
    }
    0
}

// ---- ioctl -------------------------------------------------------------------

fn copy_in<T: Default>(arg: usize, minsz: usize) -> Result<T> {
    let mut t = T::default();
    // SAFETY: `T` is a plain `#[repr(C)]` uapi struct of at least `minsz`
    // bytes; every bit pattern is valid.
    let bytes = unsafe { core::slice::from_raw_parts_mut(ptr::from_mut(&mut t).cast::<u8>(), minsz) };
    UserSlice::new(UserPtr::from_addr(arg), minsz).reader().read_slice(bytes)?;
    Ok(t)
}

fn copy_out<T>(arg: usize, t: &T, minsz: usize) -> Result {
    // SAFETY: `T` is a plain uapi struct of at least `minsz` bytes.
    let bytes = unsafe { core::slice::from_raw_parts(ptr::from_ref(t).cast::<u8>(), minsz) };
    UserSlice::new(UserPtr::from_addr(arg), minsz).writer().write_slice(bytes)
}

/// How many vectors each IRQ index offers: INTx 1, MSI 1, MSI-X 0, ERR 0, REQ 1.
fn irq_count(index: u32) -> u32 {
    match index {
        vfio::VFIO_PCI_INTX_IRQ_INDEX | vfio::VFIO_PCI_MSI_IRQ_INDEX | vfio::VFIO_PCI_REQ_IRQ_INDEX => 1,
        _ => 0,
    }
}

unsafe extern "C" fn vgpu_ioctl(vdev: *mut vfio::vfio_device, cmd: u32, arg: usize) -> isize {
    // SAFETY: called between init and release.
    let v = unsafe { vgpu_of(vdev) };
    let r = match cmd {
        VFIO_DEVICE_GET_INFO => ioctl_get_info(arg),
        VFIO_DEVICE_QUERY_GFX_PLANE => ioctl_query_gfx_plane(v, arg),
        VFIO_DEVICE_GET_GFX_DMABUF => {
            return match ioctl_get_gfx_dmabuf(v, arg) {
                Ok(fd) => fd as isize,
                Err(e) => errno(e),
            }
        }
        VFIO_DEVICE_GET_IRQ_INFO => ioctl_irq_info(arg),
        VFIO_DEVICE_SET_IRQS => ioctl_set_irqs(v, arg),
        VFIO_DEVICE_RESET => {
            // Reset turns memory decode off and drops the CPU mappings.  The
            // VMM's interrupt setup (eventfds, INTx mask) is its own state
            // and survives, as with vfio-pci.
            v.reset();
            Ok(())
        }
        _ => Err(ENOTTY),
    };
    match r {
        Ok(()) => 0,
        Err(e) => errno(e),
    }
}

fn ioctl_get_info(arg: usize) -> Result {
    let minsz = core::mem::offset_of!(vfio::vfio_device_info, num_irqs) + 4;
    let mut info: vfio::vfio_device_info = copy_in(arg, minsz)?;
    if (info.argsz as usize) < minsz {
        return Err(EINVAL);
    }
    info.flags = vfio::VFIO_DEVICE_FLAGS_PCI | vfio::VFIO_DEVICE_FLAGS_RESET;
    info.num_regions = ALL_REGIONS;
    info.num_irqs = NUM_IRQS;
    // No device capabilities (no FLAGS_CAPS): as vfio-pci, write back as
    // much of the struct as the caller has room for, cap_offset 0.
    info.cap_offset = 0;
    let out = (info.argsz as usize).min(core::mem::size_of::<vfio::vfio_device_info>());
    copy_out(arg, &info, out)
}

/// What this driver implements of `VFIO_DEVICE_QUERY_GFX_PLANE` (probes
/// answer from it).
fn gfx_caps(v: &Vgpu) -> GfxCaps {
    GfxCaps { region: true, dmabuf: v.dmabuf() }
}

/// `VFIO_DEVICE_QUERY_GFX_PLANE` (linux/vfio.h): `argsz` covers at least up
/// to `region_index`/`dmabuf_id`; a probe answers 0 or -EINVAL and writes
/// nothing back; a query writes the plane (or "no plane": zero format, size,
/// width, height) back.
fn ioctl_query_gfx_plane(v: &Vgpu, arg: usize) -> Result {
    let minsz = core::mem::offset_of!(vfio::vfio_device_gfx_plane_info, __bindgen_anon_1) + 4;
    let mut info: vfio::vfio_device_gfx_plane_info = copy_in(arg, minsz)?;
    if (info.argsz as usize) < minsz {
        return Err(EINVAL);
    }
    let caps = gfx_caps(v);
    let probe = info.flags & gfx::VFIO_GFX_PLANE_TYPE_PROBE != 0;
    let (a, diagnose) = {
        let mut st = v.state.lock();
        let (core, storage) = st.split()?;
        let a = core.query_gfx_plane(&storage, info.flags, info.drm_plane_type, caps, DISPLAY_REGION).map_err(|_| EINVAL)?;
        if a.observed.changed {
            // The region now shows another plane (or none): drop the old
            // pages from every mapping, under the lock the fault takes.
            zap_display(v.vdev);
        }
        // Say once why the console is black (each time the reason changes).
        let mut diagnose = None;
        if !probe && info.drm_plane_type == gfx::DRM_PLANE_TYPE_PRIMARY {
            if a.no_plane.is_some() && a.no_plane != st.no_plane {
                diagnose = a.no_plane;
            }
            st.no_plane = a.no_plane;
        }
        (a, diagnose)
    };
    if probe {
        return Ok(());
    }
    if let Some(why) = diagnose {
        pr_info!("vGPU {}: no display plane: {}\n", v.id, Shown(why));
    }
    let p = a.info;
    info.drm_format = p.drm_format;
    info.drm_format_mod = p.drm_format_mod;
    info.width = p.width;
    info.height = p.height;
    info.stride = p.stride;
    info.size = p.size;
    info.x_pos = p.x_pos;
    info.y_pos = p.y_pos;
    info.x_hot = p.x_hot;
    info.y_hot = p.y_hot;
    // (`region_index` and `dmabuf_id` share the union's storage.)
    info.__bindgen_anon_1.bindgen_union_field = p.region_index_or_dmabuf_id;
    copy_out(arg, &info, minsz)
}

fn ioctl_irq_info(arg: usize) -> Result {
    let minsz = core::mem::offset_of!(vfio::vfio_irq_info, count) + 4;
    let mut info: vfio::vfio_irq_info = copy_in(arg, minsz)?;
    if (info.argsz as usize) < minsz || info.index >= NUM_IRQS {
        return Err(EINVAL);
    }
    info.count = irq_count(info.index);
    // As vfio-pci: every index is eventfd-signalled; INTx is maskable and
    // automasked; the others cannot be resized (no dynamic MSI-X).
    info.flags = vfio::VFIO_IRQ_INFO_EVENTFD
        | if info.index == INTX {
            vfio::VFIO_IRQ_INFO_MASKABLE | vfio::VFIO_IRQ_INFO_AUTOMASKED
        } else {
            vfio::VFIO_IRQ_INFO_NORESIZE
        };
    copy_out(arg, &info, minsz)
}

fn ioctl_set_irqs(v: &Vgpu, arg: usize) -> Result {
    let minsz = core::mem::offset_of!(vfio::vfio_irq_set, count) + 4;
    let mut hdr: vfio::vfio_irq_set = copy_in(arg, minsz)?;
    let mut data_size: usize = 0;
    let max = if hdr.index < NUM_IRQS { irq_count(hdr.index) } else { 0 };
    // SAFETY: `hdr` is a valid header; the helper only reads it.
    to_result(unsafe { vfio::vfio_set_irqs_validate_and_prepare(&mut hdr, max as i32, NUM_IRQS as i32, &mut data_size) })?;
    let mut data = [0u8; 4];
    if data_size > data.len() {
        return Err(EINVAL);
    }
    if data_size > 0 {
        UserSlice::new(UserPtr::from_addr(arg + minsz), data_size).reader().read_slice(&mut data[..data_size])?;
    }
    let action = hdr.flags & vfio::VFIO_IRQ_SET_ACTION_TYPE_MASK;
    let kind = hdr.flags & vfio::VFIO_IRQ_SET_DATA_TYPE_MASK;
    match action {
        vfio::VFIO_IRQ_SET_ACTION_MASK | vfio::VFIO_IRQ_SET_ACTION_UNMASK => {
            // Only INTx is maskable (GET_IRQ_INFO says so); one vector.
            if hdr.index != INTX || hdr.count != 1 {
                return Err(EINVAL);
            }
            let mask = action == vfio::VFIO_IRQ_SET_ACTION_MASK;
            match kind {
                vfio::VFIO_IRQ_SET_DATA_NONE => v.set_intx_mask(mask),
                vfio::VFIO_IRQ_SET_DATA_BOOL => {
                    if data[0] != 0 {
                        v.set_intx_mask(mask);
                    }
                }
                vfio::VFIO_IRQ_SET_DATA_EVENTFD => {
                    let fd = i32::from_ne_bytes(data);
                    v.set_virqfd(if mask { VIRQFD_MASK } else { VIRQFD_UNMASK }, fd)?;
                }
                _ => return Err(EINVAL),
            }
            Ok(())
        }
        vfio::VFIO_IRQ_SET_ACTION_TRIGGER => match kind {
            vfio::VFIO_IRQ_SET_DATA_EVENTFD => {
                if hdr.count == 0 {
                    v.set_eventfd(hdr.index, ptr::null_mut());
                    return Ok(());
                }
                let fd = i32::from_ne_bytes(data);
                if fd < 0 {
                    v.set_eventfd(hdr.index, ptr::null_mut());
                    return Ok(());
                }
                // SAFETY: eventfd_ctx_fdget validates `fd` itself.
                let ctx = unsafe { bindings::eventfd_ctx_fdget(fd) };
                // SAFETY: checking an ERR_PTR-or-pointer value.
                if unsafe { vfio::gvt_rs_is_err(ctx.cast()) } {
                    // EBADF for a closed fd, EINVAL for a non-eventfd.
                    // SAFETY: as above.
                    return Err(Error::from_errno(unsafe { vfio::gvt_rs_ptr_err(ctx.cast()) } as i32));
                }
                v.set_eventfd(hdr.index, ctx);
                Ok(())
            }
            vfio::VFIO_IRQ_SET_DATA_NONE => {
                if hdr.count == 0 {
                    v.set_eventfd(hdr.index, ptr::null_mut());
                } else {
                    v.signal(hdr.index);
                }
                Ok(())
            }
            vfio::VFIO_IRQ_SET_DATA_BOOL => {
                if hdr.count > 0 && data[0] != 0 {
                    v.signal(hdr.index);
                }
                Ok(())
            }
            _ => Err(EINVAL),
        },
        _ => Err(EINVAL),
    }
}

// ---- aperture mmap -----------------------------------------------------------

static APERTURE_VM_OPS: Ops<bindings::vm_operations_struct> = Ops({
    // SAFETY: all-zero is a valid `vm_operations_struct` (every field is an
    // optional function pointer or a plain value).
    let mut ops: bindings::vm_operations_struct = unsafe { core::mem::zeroed() };
    ops.fault = Some(aperture_fault);
    ops
});

/// `vfio_device_ops.mmap`: only BAR2, only inside this vGPU's slice, shared.
unsafe extern "C" fn vgpu_mmap(vdev: *mut vfio::vfio_device, vma: *mut bindings::vm_area_struct) -> i32 {
    // SAFETY: called between init and release.
    let v = unsafe { vgpu_of(vdev) };
    // SAFETY: `vma` is the VMA being set up by mmap(2).
    let (pgoff, len, shared) =
        unsafe { (vfio::gvt_rs_vma_pgoff(vma) as u64, vfio::gvt_rs_vma_len(vma) as u64, vfio::gvt_rs_vma_is_shared(vma)) };
    // As vfio-pci: the region index is the page offset's top bits (no
    // overflow for a huge pgoff), a shared mapping only.
    let index = pgoff >> (REGION_SHIFT - PAGE_SHIFT);
    let off = (pgoff & (REGION_MASK >> PAGE_SHIFT)) << PAGE_SHIFT;
    if index == u64::from(DISPLAY_REGION) && shared {
        let size = match v.state.lock().core() {
            Ok(c) => c.display_region_size(),
            Err(e) => return e.to_errno(),
        };
        if len == 0 || off.checked_add(len).is_none_or(|end| end > size) {
            return EINVAL.to_errno();
        }
        // SAFETY: as below; the helper refuses a writable mapping of the
        // read-only region and keeps it from becoming one.
        return unsafe { vfio::gvt_rs_vma_setup_ro(vma, &DISPLAY_VM_OPS.0, ptr::from_ref(v).cast_mut().cast()) };
    }
    if index != u64::from(BAR2) || !shared {
        return EINVAL.to_errno();
    }
    if len == 0 || !v.part.aperture.contains(off, len) {
        return EINVAL.to_errno();
    }
    // SAFETY: the ops table is 'static; the private pointer stays valid while
    // the mapping exists (it holds the device file open, so no `release`).
    // A PFN mapping: the frames are guest RAM (the VMM's anonymous or shmem
    // pages), not pages of this file; a `vmf->page` fault would hand them to
    // the shared-file write-fault path (dirty accounting through their
    // `mapping`), which is only right for page-cache pages of this file.
    unsafe { vfio::gvt_rs_vma_setup_pfnmap(vma, &APERTURE_VM_OPS.0, ptr::from_ref(v).cast_mut().cast()) };
    0
}

/// The state lock, for a fault handler (aperture, display region).  The
/// fault holds its mm lock (the mmap_lock, or the per-VMA lock) for read;
/// a BAR0 write holds the state lock while it pins guest pages
/// (`vfio_pin_pages`), which takes the same mm's mmap_lock for read (to
/// find the page) and for write (type1 accounts it in locked_vm).  Its write
/// waits for this fault's read; its read waits too once any thread of the
/// VMM is queued for write (mmap, munmap, mprotect).  Sleeping on the state
/// lock here would close the cycle, for good (VM test `fault_lock`).  So,
/// as TTM (`ttm_bo_vm_reserve`): try the lock; if it is busy and the fault
/// may be retried, drop the mm lock, wait for the state lock without it, and
/// have the fault retried (`Err(VM_FAULT_RETRY)`).  This is done on every
/// try, not only the first (`enum fault_flag`: faults may be retried many
/// times; a later try that slept here could deadlock the same way).  A
/// fault that cannot be retried (its caller holds the mm lock itself, e.g.
/// `access_remote_vm`) waits for the lock as before.
///
/// First, a fault raised by the task that is inside `bar0_write` (it pins a
/// page the guest's GGTT entry put on this very mapping, and holds the state
/// lock) is refused with SIGBUS: the pin fails and the entry goes to scratch
/// (`self_map_faults`; see [`Vgpu::pinning`]).
fn fault_lock<'a>(v: &'a Vgpu, vmf: *mut bindings::vm_fault) -> Result<MutexGuard<'a, State>, bindings::vm_fault_t> {
    if v.pinning.load(Ordering::Relaxed) == current_task() {
        v.self_faults.fetch_add(1, Ordering::Relaxed);
        return Err(bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t);
    }
    if let Some(st) = v.state.try_lock() {
        return Ok(st);
    }
    // SAFETY: `vmf` is the fault being handled.
    if !unsafe { vfio::gvt_rs_vmf_may_retry(vmf) } {
        return Ok(v.state.lock());
    }
    v.fault_retries.fetch_add(1, Ordering::Relaxed);
    let retry = bindings::vm_fault_reason_VM_FAULT_RETRY as bindings::vm_fault_t;
    // RETRY_NOWAIT: the caller keeps the mm lock and does not wait.
    // SAFETY: `vmf` is the fault being handled.
    if unsafe { vfio::gvt_rs_vmf_retry_nowait(vmf) } {
        return Err(retry);
    }
    // SAFETY: `vmf` is the fault being handled, its mm lock held; the helper
    // takes a reference on the mapping's file before it drops that lock, and
    // nothing below touches `vmf` or its VMA (which may now go away).
    let file = unsafe { vfio::gvt_rs_vmf_release_lock(vmf) };
    // `v` stays valid without the mapping: the file reference keeps the
    // VFIO device open, so the vGPU is not released.
    drop(v.state.lock());
    // SAFETY: the reference taken by `gvt_rs_vmf_release_lock` above.
    unsafe { vfio::gvt_rs_fput(file) };
    Err(retry)
}

/// Fault on the aperture mapping: hand the slice's backing page to the CPU;
/// afterwards CPU accesses go straight to memory, no trap.
unsafe extern "C" fn aperture_fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
    // SAFETY: `vm_private_data` was set to our `Vgpu` by `vgpu_mmap`.
    let v = unsafe { &*vfio::gvt_rs_vmf_private(vmf).cast::<Vgpu>() };
    // SAFETY: `vmf` is the fault being handled.
    let pgoff = unsafe { vfio::gvt_rs_vmf_pgoff(vmf) } as u64;
    let off = (pgoff & (REGION_MASK >> PAGE_SHIFT)) << PAGE_SHIFT;
    if !v.part.aperture.contains(off, PAGE_SIZE) {
        return bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t;
    }
    let mut st = match fault_lock(v, vmf) {
        Ok(st) => st,
        Err(retry) => return retry,
    };
    let Ok((core, mut storage)) = st.split() else {
        return bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t;
    };
    // Memory decode off: the BAR does not respond (vfio-pci: SIGBUS).  A
    // config write turning decode off zaps the mappings after this check
    // can have passed, so a racing fault can at worst map this vGPU's own
    // page once more until the next zap.
    if !core.cfg().memory_enabled() {
        return bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t;
    }
    // The page the GGTT maps at this graphics address (the engine sees the
    // same one): the guest's pinned page, or this vGPU's scratch page.  A
    // PTE change zaps this mapping (KCpu), so the next access faults again.
    match core.aperture_fault(&mut storage, off) {
        // SAFETY: the page is pinned (or is our scratch page) while the GGTT
        // maps it, and the core invalidates this mapping (KCpu) before it
        // unpins the page, under the lock held here.
        Ok(page) => unsafe { vfio::gvt_rs_vmf_insert_pfn(vmf, page.0) },
        Err(_) => bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t,
    }
}

// ---- display region mmap -------------------------------------------------------

static DISPLAY_VM_OPS: Ops<bindings::vm_operations_struct> = Ops({
    // SAFETY: as for `APERTURE_VM_OPS`.
    let mut ops: bindings::vm_operations_struct = unsafe { core::mem::zeroed() };
    ops.fault = Some(display_fault);
    ops
});

/// Fault on the display region: the page of the plane the last
/// QUERY_GFX_PLANE reported (through the shadow GGTT, like the aperture), or
/// this vGPU's scratch page past the plane.  A new plane, a GGTT change
/// under it, a DMA unmap or a reset zaps the mapping, so it faults again.
unsafe extern "C" fn display_fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
    // SAFETY: `vm_private_data` was set to our `Vgpu` by `vgpu_mmap`.
    let v = unsafe { &*vfio::gvt_rs_vmf_private(vmf).cast::<Vgpu>() };
    // SAFETY: `vmf` is the fault being handled.
    let pgoff = unsafe { vfio::gvt_rs_vmf_pgoff(vmf) } as u64;
    let page_index = pgoff & (REGION_MASK >> PAGE_SHIFT);
    let mut st = match fault_lock(v, vmf) {
        Ok(st) => st,
        Err(retry) => return retry,
    };
    let Ok((core, mut storage)) = st.split() else {
        return bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t;
    };
    match core.display_fault(&mut storage, page_index) {
        // SAFETY: the page is pinned (or is our scratch page) while the GGTT
        // maps it; every path that could unpin it (a GGTT write under the
        // shown plane, a DMA unmap, a reset) zaps this mapping first, under
        // the lock held here, and a new plane zaps it too.
        Some(page) => unsafe { vfio::gvt_rs_vmf_insert_pfn(vmf, page.0) },
        None => bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t,
    }
}

// ---- dma-buf planes (VFIO_DEVICE_GET_GFX_DMABUF) --------------------------------

/// One exported framebuffer: a page reference per page, taken under the
/// vGPU's lock while the shadow GGTT mapped them, dropped at `release`.  It
/// holds no pointer to the vGPU, so it may outlive it (the VMM keeps the fd).
struct DmaBufPages {
    pages: KVVec<*mut bindings::page>,
    size: usize,
    /// The exporting vGPU's `dmabuf_page_faults`.
    faults: Arc<AtomicU64>,
}

impl Drop for DmaBufPages {
    fn drop(&mut self) {
        for &pg in self.pages.iter() {
            // SAFETY: each entry holds the reference `gvt_rs_pfn_get_page` took.
            unsafe { vfio::gvt_rs_put_page(pg) };
        }
    }
}

static DMABUF_OPS: Ops<bindings::dma_buf_ops> = Ops({
    // SAFETY: all-zero is a valid `dma_buf_ops` (optional callbacks, plain values).
    let mut ops: bindings::dma_buf_ops = unsafe { core::mem::zeroed() };
    ops.map_dma_buf = Some(dmabuf_map);
    ops.unmap_dma_buf = Some(dmabuf_unmap);
    ops.release = Some(dmabuf_release);
    ops.mmap = Some(dmabuf_mmap);
    ops
});

static DMABUF_VM_OPS: Ops<bindings::vm_operations_struct> = Ops({
    // SAFETY: as for `APERTURE_VM_OPS`.
    let mut ops: bindings::vm_operations_struct = unsafe { core::mem::zeroed() };
    ops.fault = Some(dmabuf_fault);
    ops
});

/// # Safety
/// `buf` is a dma-buf exported by `ioctl_get_gfx_dmabuf` and not yet released.
unsafe fn dmabuf_pages<'a>(buf: *mut bindings::dma_buf) -> &'a DmaBufPages {
    // SAFETY: `priv_` is the `DmaBufPages` box leaked at export, freed only by
    // `dmabuf_release`.
    unsafe { &*(*buf).priv_.cast::<DmaBufPages>() }
}

fn err_ptr<T>(e: Error) -> *mut T {
    e.to_errno() as isize as *mut T
}

unsafe extern "C" fn dmabuf_map(
    at: *mut bindings::dma_buf_attachment,
    dir: bindings::dma_data_direction,
) -> *mut bindings::sg_table {
    // SAFETY: the dma-buf core passes a live attachment of our buffer.
    let (obj, dev) = unsafe { (dmabuf_pages((*at).dmabuf), (*at).dev) };
    // SAFETY: all-zero is an empty `sg_table`.
    let Ok(sgt) = KBox::new(unsafe { core::mem::zeroed::<bindings::sg_table>() }, GFP_KERNEL) else {
        return err_ptr(ENOMEM);
    };
    let sgt = KBox::into_raw(sgt);
    // SAFETY: `sgt` is ours; the page array holds `pages.len()` referenced pages.
    let r = unsafe {
        bindings::sg_alloc_table_from_pages_segment(
            sgt,
            obj.pages.as_ptr().cast_mut(),
            obj.pages.len() as u32,
            0,
            obj.size as _,
            u32::MAX,
            bindings::GFP_KERNEL,
        )
    };
    if r == 0 {
        // SAFETY: a table built above, mapped for the importer's device.
        if unsafe { bindings::dma_map_sgtable(dev, sgt, dir, 0) } == 0 {
            return sgt;
        }
        // SAFETY: allocated above and not mapped.
        unsafe { bindings::sg_free_table(sgt) };
    }
    // SAFETY: from `KBox::into_raw` above.
    drop(unsafe { KBox::from_raw(sgt) });
    err_ptr(ENOMEM)
}

unsafe extern "C" fn dmabuf_unmap(
    at: *mut bindings::dma_buf_attachment,
    sgt: *mut bindings::sg_table,
    dir: bindings::dma_data_direction,
) {
    // SAFETY: `sgt` came from `dmabuf_map` for this attachment
    // (`dma_unmap_sgtable` is an inline of exactly this call).
    unsafe {
        bindings::dma_unmap_sg_attrs((*at).dev, (*sgt).sgl, (*sgt).orig_nents as i32, dir, 0);
        bindings::sg_free_table(sgt);
        drop(KBox::from_raw(sgt));
    }
}

unsafe extern "C" fn dmabuf_release(buf: *mut bindings::dma_buf) {
    // SAFETY: the last reference is gone; `priv_` is our leaked box.
    drop(unsafe { KBox::from_raw((*buf).priv_.cast::<DmaBufPages>()) });
}

unsafe extern "C" fn dmabuf_mmap(buf: *mut bindings::dma_buf, vma: *mut bindings::vm_area_struct) -> i32 {
    // SAFETY: `vma` is being set up by mmap(2) of our dma-buf.
    if !unsafe { vfio::gvt_rs_vma_is_shared(vma) } {
        return EINVAL.to_errno();
    }
    // SAFETY: the mapping holds the dma-buf file, so `priv_` (and the page
    // references it holds) outlives it; the dma-buf core checked the range
    // against the buffer's size.  A PFN mapping: the pages belong to the
    // guest RAM's file, which may drop them from its cache (the VMM unmaps
    // its RAM) while the buffer still shows them.
    unsafe { vfio::gvt_rs_vma_setup_pfnmap(vma, &DMABUF_VM_OPS.0, (*buf).priv_) };
    0
}

unsafe extern "C" fn dmabuf_fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
    // SAFETY: `vm_private_data` is the buffer's `DmaBufPages` (see `dmabuf_mmap`).
    let obj = unsafe { &*vfio::gvt_rs_vmf_private(vmf).cast::<DmaBufPages>() };
    // SAFETY: `vmf` is the fault being handled.
    let pgoff = unsafe { vfio::gvt_rs_vmf_pgoff(vmf) };
    match obj.pages.get(pgoff) {
        Some(&pg) => {
            obj.faults.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the buffer holds a reference on the page until
            // `release`, which runs only after every mapping of it is gone.
            unsafe { vfio::gvt_rs_vmf_insert_page_pfn(vmf, pg) }
        }
        None => bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t,
    }
}

/// `VFIO_DEVICE_GET_GFX_DMABUF`: a new dma-buf fd over the framebuffer of the
/// plane whose id QUERY_GFX_PLANE (`VFIO_GFX_PLANE_TYPE_DMABUF`) returned.
/// The pages are those the shadow GGTT maps now: the guest's, or this vGPU's
/// scratch page; never another vGPU's (the plane was validated against this
/// vGPU's slices, and the page list is built through its own shadow GGTT).
fn ioctl_get_gfx_dmabuf(v: &Vgpu, arg: usize) -> Result<i32> {
    if !v.dmabuf() {
        return Err(ENOTTY);
    }
    let mut id = [0u8; 4];
    UserSlice::new(UserPtr::from_addr(arg), 4).reader().read_slice(&mut id)?;
    let id = u32::from_ne_bytes(id);
    let obj = {
        let mut st = v.state.lock();
        let (core, mut storage) = st.split()?;
        let plane = core.dmabuf_plane(id).ok_or(ENOENT)?;
        let n = usize::try_from(plane.pages()).map_err(|_| EINVAL)?;
        let mut hp = KVVec::with_capacity(n, GFP_KERNEL)?;
        hp.resize(n, HostPage(0), GFP_KERNEL)?;
        if core.framebuffer_pages(&mut storage, &plane, &mut hp).map_err(|_| EINVAL)? != n {
            return Err(EINVAL);
        }
        let mut obj = DmaBufPages {
            pages: KVVec::with_capacity(n, GFP_KERNEL)?,
            size: plane.mapped_size() as usize,
            faults: v.dmabuf_page_faults.clone(),
        };
        for page in hp.iter() {
            // SAFETY: the page is pinned (or our scratch page) while the GGTT
            // maps it, and we hold the lock that keeps it so; the reference
            // taken here keeps it alive for the buffer.
            let pg = unsafe { vfio::gvt_rs_pfn_get_page(page.0) };
            if pg.is_null() {
                return Err(EFAULT);
            }
            if let Err(e) = obj.pages.push(pg, GFP_KERNEL) {
                // SAFETY: the reference just taken.
                unsafe { vfio::gvt_rs_put_page(pg) };
                return Err(e.into());
            }
        }
        obj
    };
    let size = obj.size;
    let priv_ = KBox::into_raw(KBox::new(obj, GFP_KERNEL)?);
    // SAFETY: all-zero is a valid `dma_buf_export_info`; the fields set are
    // what DEFINE_DMA_BUF_EXPORT_INFO sets, plus ours.
    let mut info: bindings::dma_buf_export_info = unsafe { core::mem::zeroed() };
    info.exp_name = c"gvt_rs".as_ptr().cast();
    // SAFETY: reads THIS_MODULE.
    info.owner = unsafe { vfio::gvt_rs_this_module() }.cast();
    info.ops = &DMABUF_OPS.0;
    info.size = size;
    info.flags = bindings::O_RDWR as i32;
    info.priv_ = priv_.cast();
    // SAFETY: `info` is complete; on success the buffer owns `priv_`.
    let buf = unsafe { bindings::dma_buf_export(&info) };
    // SAFETY: checking an ERR_PTR-or-pointer value.
    if unsafe { vfio::gvt_rs_is_err(buf.cast()) } {
        // SAFETY: not exported: the box is still ours.
        drop(unsafe { KBox::from_raw(priv_) });
        // SAFETY: as above.
        return Err(Error::from_errno(unsafe { vfio::gvt_rs_ptr_err(buf.cast()) } as i32));
    }
    // SAFETY: `buf` is our new dma-buf; on failure dropping its only
    // reference releases it (and our pages).
    let fd = unsafe { bindings::dma_buf_fd(buf, (bindings::O_CLOEXEC | bindings::O_RDWR) as i32) };
    if fd < 0 {
        // SAFETY: as above.
        unsafe { bindings::dma_buf_put(buf) };
        return Err(Error::from_errno(fd));
    }
    v.dmabufs_exported.fetch_add(1, Ordering::Relaxed);
    Ok(fd)
}

// ---- sysfs: /sys/bus/mdev/devices/UUID/gvt/* ---------------------------------

fn vgpu_of_dev(dev: *mut bindings::device) -> Option<&'static Vgpu> {
    // SAFETY: the attributes live on the mdev device; drvdata is our
    // `vfio_device` while the driver is bound (the group exists only then).
    let vdev = unsafe { vfio::gvt_rs_get_drvdata(dev.cast()) }.cast::<vfio::vfio_device>();
    if vdev.is_null() {
        return None;
    }
    // SAFETY: as above.
    Some(unsafe { vgpu_of(vdev) })
}

/// A `core::fmt::Display` value for the kernel's `pr_*!` macros.
struct Shown<T>(T);

impl<T: core::fmt::Display> kernel::fmt::Display for Shown<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}

/// A DRM fourcc as its four characters.
struct FourCc(u32);

impl core::fmt::Display for FourCc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use core::fmt::Write as _;
        for b in self.0.to_le_bytes() {
            f.write_char(if b.is_ascii_graphic() { b as char } else { '?' })?;
        }
        Ok(())
    }
}

#[no_mangle]
unsafe extern "C" fn gvt_rs_attr_show(dev: *mut bindings::device, attr: u32, buf: *mut u8) -> isize {
    let Some(v) = vgpu_of_dev(dev) else {
        return errno(ENODEV);
    };
    // SAFETY: sysfs show buffers are PAGE_SIZE bytes.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, bindings::PAGE_SIZE as usize) };
    let mut w = SliceWriter::new(out);
    use core::fmt::Write;
    let p = &v.part;
    let _ = match attr {
        vfio::gvt_rs_attr_GVT_RS_ATTR_VGPU_ID => writeln!(w, "{}", v.id),
        vfio::gvt_rs_attr_GVT_RS_ATTR_APERTURE_BASE => writeln!(w, "{}", p.aperture.base),
        vfio::gvt_rs_attr_GVT_RS_ATTR_APERTURE_SIZE => writeln!(w, "{}", p.aperture.size),
        vfio::gvt_rs_attr_GVT_RS_ATTR_HIGH_GM_BASE => writeln!(w, "{}", p.high.base),
        vfio::gvt_rs_attr_GVT_RS_ATTR_HIGH_GM_SIZE => writeln!(w, "{}", p.high.size),
        vfio::gvt_rs_attr_GVT_RS_ATTR_FENCE_BASE => writeln!(w, "{}", p.fence_base),
        vfio::gvt_rs_attr_GVT_RS_ATTR_FENCE_COUNT => writeln!(w, "{}", p.fence_count),
        vfio::gvt_rs_attr_GVT_RS_ATTR_WEIGHT => {
            let g = parent::get().gpu.lock();
            writeln!(w, "{}", g.gpu.scheduler().weight(v.slot).unwrap_or(0))
        }
        vfio::gvt_rs_attr_GVT_RS_ATTR_STATE => {
            let g = parent::get().gpu.lock();
            let s = g.gpu.scheduler().state(v.slot);
            writeln!(w, "{}", if s == VgpuState::Failed { "failed" } else { "running" })
        }
        vfio::gvt_rs_attr_GVT_RS_ATTR_BALLOONED => writeln!(w, "{}", v.ballooned.load(Ordering::Relaxed)),
        vfio::gvt_rs_attr_GVT_RS_ATTR_DMABUF => writeln!(w, "{}", u8::from(v.dmabuf())),
        vfio::gvt_rs_attr_GVT_RS_ATTR_DISPLAY => {
            let mut st = v.state.lock();
            let Ok((core, storage)) = st.split() else { return errno(ENODEV) };
            let now = core.display_plane(&storage);
            let ids = core.plane_ids();
            let (shown, changes) = (ids.current(), ids.changes());
            let _ = match now {
                Ok(p) => writeln!(
                    w,
                    "plane: {}x{} {} stride {} surface {:#x} size {:#x}",
                    p.width(),
                    p.height(),
                    FourCc(p.format().drm_fourcc()),
                    p.stride(),
                    p.surface(),
                    p.mapped_size()
                ),
                Err(why) => writeln!(w, "plane: none: {why}"),
            };
            let _ = writeln!(w, "shown_plane_id: {shown}\nplane_changes: {changes}");
            let _ = writeln!(w, "dmabufs_exported: {}", v.dmabufs_exported.load(Ordering::Relaxed));
            let _ = writeln!(w, "dmabuf_page_faults: {}", v.dmabuf_page_faults.load(Ordering::Relaxed));
            match st.edid.mode() {
                Some(m) => writeln!(
                    w,
                    "monitor: {}x{} {}.{:03} Hz, hotplugs {}",
                    m.width,
                    m.height,
                    m.refresh_millihz() / 1000,
                    m.refresh_millihz() % 1000,
                    st.edid.hotplug_count()
                ),
                None => writeln!(w, "monitor: disconnected, hotplugs {}", st.edid.hotplug_count()),
            }
        }
        vfio::gvt_rs_attr_GVT_RS_ATTR_STATS => {
            let st = v.state.lock();
            let Ok(core) = st.core() else { return errno(ENODEV) };
            let g = parent::get().gpu.lock();
            core.write_stats(&g.gpu, &mut w)
                .and_then(|()| writeln!(w, "self_map_faults {}", v.self_faults.load(Ordering::Relaxed)))
                .and_then(|()| writeln!(w, "fault_retries {}", v.fault_retries.load(Ordering::Relaxed)))
        }
        _ => return errno(EINVAL),
    };
    w.len() as isize
}

#[no_mangle]
unsafe extern "C" fn gvt_rs_attr_store(dev: *mut bindings::device, attr: u32, buf: *const u8, count: usize) -> isize {
    let Some(v) = vgpu_of_dev(dev) else {
        return errno(ENODEV);
    };
    // SAFETY: sysfs passes `count` valid bytes.
    let input = unsafe { core::slice::from_raw_parts(buf, count) };
    let text = core::str::from_utf8(input).map(|s| s.trim()).unwrap_or("");
    match attr {
        vfio::gvt_rs_attr_GVT_RS_ATTR_DMABUF => match text {
            "0" | "1" => {
                v.dmabuf.store(text == "1", Ordering::Relaxed);
                count as isize
            }
            _ => errno(EINVAL),
        },
        vfio::gvt_rs_attr_GVT_RS_ATTR_WEIGHT => match text.parse::<u32>() {
            Ok(w) => match parent::get().gpu.lock().gpu.scheduler_mut().set_weight(v.slot, w) {
                Ok(()) => count as isize,
                Err(_) => errno(EINVAL),
            },
            _ => errno(EINVAL),
        },
        _ => errno(EINVAL),
    }
}
