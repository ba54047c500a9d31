// SPDX-License-Identifier: GPL-2.0
//! What a trap leaves to do once its locks are dropped, applied in one
//! place: signal the guest's interrupt (MSI, or INTx as the config space
//! says), zap the aperture mappings (memory decode turned off), arm the
//! vblank timer, kick the engine worker.  Every trap path returns an
//! [`Effects`]; none of these runs under a vGPU's `state` lock or takes it
//! (eventfd signalling takes `irqs`, zapping takes `map`), so the vblank
//! timer can apply them while it walks the slot table.

use crate::gpu;
use crate::gvt_core::vgpu::Signal;
use crate::vfio;
use crate::vgpu::{Vgpu, INTX};

#[derive(Default)]
pub(crate) struct Effects {
    /// The interrupt to raise.
    pub(crate) sig: Signal,
    /// Memory decode went off: zap every aperture mapping.
    pub(crate) zap_aperture: bool,
    /// The vblank timer is wanted at (deadline, now).
    pub(crate) vblank: Option<(u64, u64)>,
    /// A submission was admitted (or held): run the engines.
    pub(crate) kick: bool,
}

impl Effects {
    pub(crate) fn apply(self, v: &Vgpu) {
        if self.zap_aperture {
            v.zap_aperture();
        }
        if let Some((deadline, now)) = self.vblank {
            gpu::arm_vblank(deadline, now);
        }
        // `sig` came from the core's `signal`, which applied the guest's
        // config space (MSI enable, INTX_DISABLE) under `state`.
        if self.sig.msi {
            v.raise(vfio::VFIO_PCI_MSI_IRQ_INDEX);
        }
        if self.sig.intx == Some(true) {
            v.raise(INTX);
        }
        if self.kick {
            gpu::kick();
        }
    }
}
