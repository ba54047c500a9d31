// SPDX-License-Identifier: GPL-2.0
//! What a trap leaves to do once its locks are dropped: signal the guest's
//! interrupt (MSI, or INTx as the config space says), zap the aperture
//! mappings (memory decode turned off), arm the vblank timer, kick the
//! engine worker.  Every trap path returns an [`Effects`];
//! `MdevVgpu::apply` ([`crate::mdev`]) applies them in one place.  None of
//! these runs under a vGPU's `state` lock or takes it (eventfd signalling
//! takes `irqs`, zapping takes `map`), so the vblank timer can apply them
//! while it walks the slot table.

use crate::gvt_core::vgpu::Signal;

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
    /// Nothing to do.
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        !self.sig.msi
            && self.sig.intx.is_none()
            && !self.zap_aperture
            && self.vblank.is_none()
            && !self.kick
    }
}
