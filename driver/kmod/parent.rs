// SPDX-License-Identifier: GPL-2.0
//! The gvt-sim parents: each is one mediated gvt-sim GPU registered with
//! the mdev core ([`Parent`]: its [`MdevRegistration`], its vGPU types, and
//! what its vGPUs share, [`Shared`]: the partitioner that backs
//! `available_instances`, the mediated GPU, the workers).  A parent stands
//! on a device someone else owns:
//!
//! - [`PciParent`]: a PCI function bound to the module's PCI driver
//!   `gvt_rs`.  The driver has an empty ID table, so it binds only where
//!   root asks for it by `driver_override`
//!   (`echo gvt_rs > /sys/bus/pci/devices/BDF/driver_override;
//!   echo BDF > /sys/bus/pci/drivers_probe`), and `new_id` is refused
//!   (the PCI core accepts only `driver_data` of a table entry).  The
//!   parent is then `/sys/bus/pci/devices/BDF`, named `BDF` under
//!   `/sys/class/mdev_bus`, as i915's and NVIDIA's are, which is what
//!   libvirt's node-device layer, Nova and KubeVirt look for.  The
//!   function's hardware is never touched: not enabled, no BAR mapped, no
//!   DMA (each parent is a gvt-sim GPU in memory); the function only gives
//!   the parent its place in the device tree.  Unbinding (or hot-unplug,
//!   or `rmmod`) removes every vGPU on it first, asking the VMM of a held
//!   one to let go (VFIO's request, the REQ irq) and waiting for it.
//! - [`VirtualParent`]: a class device `/sys/devices/virtual/gvt_rs/gvt-sim0`,
//!   for hosts without a spare PCI function; registered at load unless the
//!   module parameter `virtual_parent=0`.
//!
//! Every parent gets the module parameters' configuration and its own
//! GPU, partitions and vGPU ids.  The mdev core reaches a parent through
//! [`MdevParentOps`]; each vGPU gets [`Parent::shared`] by reference, so a
//! parent is freed only after the last of its vGPUs is released
//! ([`Parent::unregister`] waits for it).  All vGPUs bind to the one mdev
//! driver of the module, [`MDEV_DRIVER`].

use core::ptr;

use kernel::bindings;
use kernel::c_str;
use kernel::device::{self, Core};
use kernel::device_id::IdArray;
use kernel::pci;
use kernel::prelude::*;

use crate::gvt_core::partition::{GmLayout, Partitioner};
use crate::gvt_core::vgpu_types::{self, SliceWriter, VgpuType, VgpuTypes};
use crate::mdev::MdevVgpu;
pub(crate) use crate::shared::ParentConfig;
use crate::shared::{MediatedGpu, Shared, MAX_VGPUS};
use crate::vfio_dev::{
    ClassDevice, MdevDriver, MdevParentOps, MdevRegistration, VfioDevice, MAX_TYPES, NAME_LEN,
};

/// The mdev driver every vGPU of every parent binds to (registered at
/// module load, before any parent; unregistered after the last).
pub(crate) static MDEV_DRIVER: MdevDriver<Parent> = MdevDriver::new();

/// What a configuration makes of a parent: its GM layout and types.
struct Plan {
    layout: GmLayout,
    /// Boxed: 6 KiB for 64 slots, too big to pass around on a kernel stack.
    partitioner: KBox<Partitioner<MAX_VGPUS>>,
    type_info: VgpuTypes,
    type_names: [[u8; NAME_LEN]; MAX_TYPES],
    ntypes: usize,
}

impl Plan {
    /// Check `cfg` (a bad module parameter fails with a log line that says
    /// why) and derive the types.
    fn new(cfg: &ParentConfig) -> Result<Self> {
        let layout = cfg.layout()?;
        let partitioner = new_partitioner(layout)?;
        let type_info = VgpuTypes::derive(&layout, cfg.max_vgpus);
        let ntypes = type_info.len().min(MAX_TYPES);
        if ntypes == 0 {
            pr_err!(
                "no vGPU type fits aperture_mb={} gm_mb={}\n",
                cfg.aperture_mb,
                cfg.gm_mb
            );
            return Err(EINVAL);
        }
        let mut type_names = [[0u8; NAME_LEN]; MAX_TYPES];
        for (t, name) in type_info.iter().zip(type_names.iter_mut()) {
            let mut w = SliceWriter::new(&mut name[..NAME_LEN - 1]);
            let _ = t.write_sysfs_name(&mut w);
        }
        Ok(Self {
            layout,
            partitioner,
            type_info,
            type_names,
            ntypes,
        })
    }
}

/// An unset partitioner in read-only data: copied into the heap, then
/// reset there ([`new_partitioner`]).
const UNSET_PARTITIONER: Partitioner<MAX_VGPUS> = Partitioner::unset();

/// The partitioner for `layout`, built in the heap: for 64 slots it is 6
/// KiB, and a `Partitioner` value (with its `Result` and the box's argument)
/// on the stack overflowed the 16 KiB kernel stack of `insmod`.
fn new_partitioner(layout: GmLayout) -> Result<KBox<Partitioner<MAX_VGPUS>>> {
    let mut b = KBox::<Partitioner<MAX_VGPUS>>::new_uninit(GFP_KERNEL)?;
    // SAFETY: `UNSET_PARTITIONER` is a promoted 'static value of the same
    // type (no `Drop`); the copy fully initialises the allocation.
    let mut b = unsafe {
        b.as_mut_ptr()
            .copy_from_nonoverlapping(&UNSET_PARTITIONER, 1);
        b.assume_init()
    };
    b.reset(layout).map_err(|e| {
        pr_err!("unusable graphics memory layout: {e:?}\n");
        EINVAL
    })?;
    Ok(b)
}

/// Check the configuration of the module's parents (at load: bad
/// parameters fail the load even when no parent registers yet).
pub(crate) fn check_config(cfg: &ParentConfig) -> Result {
    Plan::new(cfg).map(|_| ())
}

/// A gvt-sim parent: the C objects the mdev core points into (pinned,
/// never moved) and the side its vGPUs share.
#[pin_data]
pub(crate) struct Parent {
    #[pin]
    reg: MdevRegistration<Parent>,
    type_info: VgpuTypes,
    /// The device's name (`gvt-sim0`, `0000:00:04.0`), NUL-padded, for logs.
    name: [u8; NAME_LEN],
    #[pin]
    pub(crate) shared: Shared<MdevVgpu>,
}

impl Parent {
    /// A parent with configuration `cfg` on device `dev` (named `name`).
    ///
    /// # Safety
    /// `dev` is a live device that stays registered, and referenced, until
    /// [`Parent::unregister`] of the returned parent has returned.
    pub(crate) unsafe fn register(
        cfg: ParentConfig,
        name: &CStr,
        dev: *mut bindings::device,
    ) -> Result<Pin<KBox<Parent>>> {
        let plan = Plan::new(&cfg)?;
        let mut pname = [0u8; NAME_LEN];
        let n = name.to_bytes().len().min(NAME_LEN - 1);
        pname[..n].copy_from_slice(&name.to_bytes()[..n]);
        let gpu = MediatedGpu::new(
            plan.layout.total_gm,
            cfg.max_vgpus as usize,
            cfg.bench_no_audit == 0,
        )?;
        let parent = KBox::pin_init(
            try_pin_init!(Parent {
                reg: MdevRegistration::new(plan.type_names, plan.ntypes),
                type_info: plan.type_info,
                name: pname,
                shared <- Shared::new(cfg, plan.layout, plan.partitioner, gpu),
            }? Error),
            GFP_KERNEL,
        )?;
        parent.as_ref().shared_pinned().start()?;
        // SAFETY: `dev` outlives the registration (our caller's guarantee,
        // passed on); `unregister` undoes it before `parent` goes.
        unsafe {
            parent
                .as_ref()
                .reg_pinned()
                .register(parent.as_ref().get_ref(), dev, &MDEV_DRIVER)?
        };
        // Host memory the parent holds before any vGPU: the physical GGTT
        // (8 bytes per GM page), the mediated GPU's state, the parent.
        let held = {
            let g = parent.shared.gpu.lock();
            g.phys.capacity() * core::mem::size_of::<crate::gvt_core::backend::Pte>()
                + core::mem::size_of_val(&*g.gpu)
        } + core::mem::size_of::<Parent>()
            + core::mem::size_of::<Partitioner<MAX_VGPUS>>();
        pr_info!(
            "gvt-sim parent {}: aperture {} MiB, GM {} MiB, {} fences, up to {} vGPUs, {} types, host memory {} KiB\n",
            parent.name(),
            cfg.aperture_mb,
            cfg.gm_mb,
            cfg.fences,
            cfg.max_vgpus,
            plan.ntypes,
            held >> 10
        );
        Ok(parent)
    }

    fn reg_pinned(self: Pin<&Self>) -> Pin<&MdevRegistration<Parent>> {
        // SAFETY: `reg` is structurally pinned (`#[pin]`).
        unsafe { self.map_unchecked(|p| &p.reg) }
    }

    fn shared_pinned(self: Pin<&Self>) -> Pin<&Shared<MdevVgpu>> {
        // SAFETY: `shared` is structurally pinned (`#[pin]`).
        unsafe { self.map_unchecked(|p| &p.shared) }
    }

    /// The parent device's name (`gvt-sim0`, `0000:00:04.0`).
    pub(crate) fn name(&self) -> &str {
        let n = self.name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        core::str::from_utf8(&self.name[..n]).unwrap_or("?")
    }

    /// Undo `register`: the mdev core removes every remaining vGPU first
    /// (asking the VMM of a held one to let go, and waiting), then every
    /// vGPU's data is released, then the workers stop for good.  After it
    /// returns nothing points into the parent.
    pub(crate) fn unregister(self: Pin<&Self>) {
        let live = self.shared.partitions.lock().partitioner.live();
        pr_info!("gvt-sim parent {}: removing ({live} vGPUs)\n", self.name());
        self.reg_pinned().unregister();
        // A vGPU's data is released when the last reference to its VFIO
        // device goes, which may be a moment after the mdev core removed
        // it (an open cdev holds the device until its file is put).
        self.shared.wait_vgpus_released(self.name());
        self.shared.stop();
        pr_info!("gvt-sim parent {}: removed\n", self.name());
    }

    fn vgpu_type(&self, i: usize) -> Option<&VgpuType> {
        self.type_info.get(i)
    }
}

impl MdevParentOps for Parent {
    type Device = MdevVgpu;

    fn create(&'static self, type_index: usize, dev: VfioDevice) -> Result<Pin<KBox<MdevVgpu>>> {
        let ty = self.vgpu_type(type_index).ok_or(EINVAL)?;
        MdevVgpu::create(&self.shared, dev, type_index, ty)
    }

    /// `available_instances` of a type: what really fits in what is left.
    fn available(&self, type_index: usize) -> u32 {
        let Some(ty) = self.vgpu_type(type_index) else {
            return 0;
        };
        let st = self.shared.partitions.lock();
        vgpu_types::available_instances(
            ty,
            &st.partitioner,
            st.partitioner.live() as u32,
            self.shared.cfg.max_vgpus,
        )
    }

    /// `description` of a type, in i915 GVT-g's format.
    fn describe(&self, type_index: usize, out: &mut [u8]) -> usize {
        let Some(ty) = self.vgpu_type(type_index) else {
            return 0;
        };
        let mut w = SliceWriter::new(out);
        let _ = ty.write_description(&mut w);
        w.len()
    }
}

// ---- the virtual parent ------------------------------------------------------------

/// The virtual parent: the class device `gvt_rs/gvt-sim0` and the parent
/// on it.  Dropping it removes the parent (and its vGPUs), then the device.
pub(crate) struct VirtualParent {
    dev: Pin<KBox<ClassDevice>>,
    parent: Option<Pin<KBox<Parent>>>,
}

impl VirtualParent {
    pub(crate) fn register(cfg: ParentConfig) -> Result<Self> {
        let dev = KBox::pin(ClassDevice::new(), GFP_KERNEL)?;
        dev.as_ref()
            .register(c_str!("gvt_rs"), c_str!("gvt-sim0"))?;
        // SAFETY: the class device stays registered until `drop`, which
        // unregisters the parent first.
        match unsafe { Parent::register(cfg, c_str!("gvt-sim0"), dev.as_raw()) } {
            Ok(parent) => Ok(Self {
                dev,
                parent: Some(parent),
            }),
            Err(e) => {
                dev.as_ref().unregister();
                Err(e)
            }
        }
    }
}

impl Drop for VirtualParent {
    fn drop(&mut self) {
        if let Some(p) = self.parent.take() {
            p.as_ref().unregister();
        }
        self.dev.as_ref().unregister();
    }
}

// ---- PCI-function parents ----------------------------------------------------------

/// A PCI function bound to the `gvt_rs` PCI driver, as a parent (see the
/// module documentation).  The driver core drops it when the function is
/// unbound (sysfs `unbind`, hot-unplug, `rmmod`), which removes the parent.
pub(crate) struct PciParent {
    parent: Pin<KBox<Parent>>,
}

impl Drop for PciParent {
    fn drop(&mut self) {
        self.parent.as_ref().unregister();
    }
}

/// No device IDs: the driver binds only by `driver_override` (the PCI core
/// then matches any function), and `new_id` is refused (it accepts only the
/// `driver_data` of a table entry).  No modalias either: nothing loads the
/// module for a device.
static NO_IDS: IdArray<pci::DeviceId, (), 0> = IdArray::new([]);

impl pci::Driver for PciParent {
    type IdInfo = ();
    type Data<'bound> = PciParent;
    const ID_TABLE: pci::IdTable<()> = &NO_IDS;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _id_info: Option<&'bound ()>,
    ) -> impl PinInit<PciParent, Error> + 'bound {
        let dev: &device::Device<Core<'_>> = pdev.as_ref();
        // `device::Device` is a transparent wrapper of `struct device`.
        let raw = ptr::from_ref(dev).cast_mut().cast::<bindings::device>();
        let cfg = crate::parent_config();
        // SAFETY: `raw` is the bound function's device: the driver core
        // keeps it registered and referenced until the function is unbound,
        // and unbinding drops the `PciParent` (which unregisters the
        // parent) before it lets the device go.
        unsafe { Parent::register(cfg, dev.name(), raw) }.map(|parent| PciParent { parent })
    }
}
