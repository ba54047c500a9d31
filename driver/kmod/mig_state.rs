// SPDX-License-Identifier: GPL-2.0
//! The VFIO migration state of one vGPU (`MdevVgpu::mig`): the FSM state
//! (the uapi's `vfio_device_mig_state` values), its data files and the
//! figures of the last save and restore.  The arcs are in
//! [`crate::migration`].

use crate::kapi::MigFile;
use crate::vfio;

pub(crate) const ERROR: u32 = vfio::vfio_device_mig_state_VFIO_DEVICE_STATE_ERROR;
pub(crate) const STOP: u32 = vfio::vfio_device_mig_state_VFIO_DEVICE_STATE_STOP;
pub(crate) const RUNNING: u32 = vfio::vfio_device_mig_state_VFIO_DEVICE_STATE_RUNNING;
pub(crate) const STOP_COPY: u32 = vfio::vfio_device_mig_state_VFIO_DEVICE_STATE_STOP_COPY;
pub(crate) const RESUMING: u32 = vfio::vfio_device_mig_state_VFIO_DEVICE_STATE_RESUMING;
pub(crate) const RUNNING_P2P: u32 = vfio::vfio_device_mig_state_VFIO_DEVICE_STATE_RUNNING_P2P;
pub(crate) const PRE_COPY: u32 = vfio::vfio_device_mig_state_VFIO_DEVICE_STATE_PRE_COPY;
pub(crate) const PRE_COPY_P2P: u32 = vfio::vfio_device_mig_state_VFIO_DEVICE_STATE_PRE_COPY_P2P;

/// The FSM of one vGPU (`MdevVgpu::mig`).
pub(crate) struct Mig {
    pub(crate) state: u32,
    pub(crate) saving: Option<MigFile>,
    pub(crate) resuming: Option<MigFile>,
    /// Figures of the last save and restore (sysfs `gvt/migration`).
    pub(crate) saved_bytes: usize,
    pub(crate) save_ns: u64,
    pub(crate) restored_bytes: usize,
    pub(crate) restore_ns: u64,
    pub(crate) refused: u64,
}

impl Mig {
    pub(crate) const fn new() -> Self {
        Mig {
            state: RUNNING,
            saving: None,
            resuming: None,
            saved_bytes: 0,
            save_ns: 0,
            restored_bytes: 0,
            restore_ns: 0,
            refused: 0,
        }
    }

    pub(crate) fn state(&self) -> u32 {
        self.state
    }

    pub(crate) fn close_files(&mut self) {
        self.saving = None;
        self.resuming = None;
    }
}

/// The uapi name of an FSM state (sysfs `gvt/migration`).
pub(crate) fn state_name(s: u32) -> &'static str {
    match s {
        STOP => "stop",
        RUNNING => "running",
        STOP_COPY => "stop_copy",
        RESUMING => "resuming",
        RUNNING_P2P => "running_p2p",
        PRE_COPY => "pre_copy",
        PRE_COPY_P2P => "pre_copy_p2p",
        _ => "error",
    }
}
