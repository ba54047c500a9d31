// SPDX-License-Identifier: GPL-2.0
//! The VFIO migration state of one vGPU (`MdevVgpu::mig`): the FSM state
//! (the uapi's `vfio_device_mig_state` values), its data files and the
//! figures of the last save and restore.  The arcs are in
//! [`crate::migration`].

use kernel::prelude::*;

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
    /// Of them, moved in PRE_COPY (initial part and rounds) and at STOP_COPY.
    pub(crate) precopy_bytes: usize,
    pub(crate) stop_copy_bytes: usize,
    pub(crate) save_ns: u64,
    pub(crate) restored_bytes: usize,
    pub(crate) restore_ns: u64,
    pub(crate) refused: u64,
    /// The buffer the parts of a save are written into before they go into
    /// the data file: allocated (and zeroed) for the initial part while the
    /// guest runs, reused for the final part at STOP_COPY, so the downtime
    /// does not pay for a buffer of the largest stream's size (megabytes
    /// for the big types).  Freed when the files close.
    pub(crate) scratch: Option<KVVec<u8>>,
}

impl Mig {
    pub(crate) const fn new() -> Self {
        Mig {
            state: RUNNING,
            saving: None,
            resuming: None,
            saved_bytes: 0,
            precopy_bytes: 0,
            stop_copy_bytes: 0,
            save_ns: 0,
            restored_bytes: 0,
            restore_ns: 0,
            refused: 0,
            scratch: None,
        }
    }

    pub(crate) fn state(&self) -> u32 {
        self.state
    }

    pub(crate) fn close_files(&mut self) {
        if self.resuming.as_ref().is_some_and(MigFile::refused) {
            // The VMM's first bytes named another type (refused as written).
            self.refused += 1;
        }
        self.saving = None;
        self.resuming = None;
        self.scratch = None;
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
