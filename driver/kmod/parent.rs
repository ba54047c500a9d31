// SPDX-License-Identifier: GPL-2.0
//! The gvt-sim parent device: its mdev registration (a class device
//! `gvt_rs/gvt-sim0` registered with the mdev core, [`MdevRegistration`]),
//! its vGPU types, and what its vGPUs share ([`Shared`]: the partitioner
//! that backs `available_instances`, the mediated GPU, the workers).  The
//! mdev core reaches it through [`MdevParentOps`]; each vGPU gets
//! [`Parent::shared`] by reference.

use kernel::prelude::*;

use crate::gvt_core::partition::Partitioner;
use crate::gvt_core::vgpu_types::{self, SliceWriter, VgpuType, VgpuTypes};
use crate::mdev::MdevVgpu;
pub(crate) use crate::shared::ParentConfig;
use crate::shared::{MediatedGpu, Shared};
use crate::vfio_dev::{MdevParentOps, MdevRegistration, VfioDevice, MAX_TYPES, NAME_LEN};

/// The gvt-sim parent: the C objects the mdev core points into (pinned,
/// never moved) and the side its vGPUs share.
#[pin_data]
pub(crate) struct Parent {
    #[pin]
    reg: MdevRegistration<Parent>,
    type_info: VgpuTypes,
    #[pin]
    pub(crate) shared: Shared<MdevVgpu>,
}

impl Parent {
    pub(crate) fn register(
        module: &'static ThisModule,
        cfg: ParentConfig,
    ) -> Result<Pin<KBox<Parent>>> {
        let layout = cfg.layout()?;
        let partitioner = Partitioner::new(layout).map_err(|e| {
            pr_err!("unusable graphics memory layout: {e:?}\n");
            EINVAL
        })?;
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
        let gpu = MediatedGpu::new(layout.total_gm)?;
        let parent = KBox::pin_init(
            try_pin_init!(Parent {
                reg: MdevRegistration::new(type_names, ntypes),
                type_info,
                shared <- Shared::new(cfg, layout, partitioner, gpu),
            }? Error),
            GFP_KERNEL,
        )?;
        parent.as_ref().shared_pinned().start()?;
        parent
            .as_ref()
            .reg_pinned()
            .register(parent.as_ref().get_ref(), module, cfg.max_vgpus)?;
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

    fn reg_pinned(self: Pin<&Self>) -> Pin<&MdevRegistration<Parent>> {
        // SAFETY: `reg` is structurally pinned (`#[pin]`).
        unsafe { self.map_unchecked(|p| &p.reg) }
    }

    fn shared_pinned(self: Pin<&Self>) -> Pin<&Shared<MdevVgpu>> {
        // SAFETY: `shared` is structurally pinned (`#[pin]`).
        unsafe { self.map_unchecked(|p| &p.shared) }
    }

    /// Undo `register`: the mdev core removes every remaining vGPU first,
    /// then the workers stop for good, then the C objects go.
    pub(crate) fn unregister(self: Pin<&Self>) {
        self.reg_pinned().unregister(|| self.shared.stop());
        let st = self.shared.partitions.lock();
        pr_info!("unloaded ({} vGPUs were live)\n", st.partitioner.live());
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
