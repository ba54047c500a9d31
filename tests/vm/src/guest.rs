//! Helpers for the submission tests: the reference guest driver
//! (`examples/guest-driver`) on a gvt_rs vGPU through VFIO, and the per-vGPU
//! sysfs counters (`gvt/stats`, `gvt/state`) the tests compare with what
//! they submitted.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use gvt_guest_driver::vfio::{RamConfig, VfioBackend};
use gvt_guest_driver::{BootConfig, Driver};

use crate::gvt;
use crate::Mdev;

/// Generous: the rig is a TCG guest.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Every test VM's RAM: 1 MiB at IOVA 1 GiB — the same IOVA for every vGPU
/// (each has its own container), so only the host pages differ, as with VMs.
pub const RAM: RamConfig = RamConfig { iova: 1 << 30, pages: 256 };

/// A vGPU of the `mb` MiB type.
pub fn vgpu(mb: u64) -> Mdev {
    Mdev::create(gvt::PARENT, &gvt::type_mb(mb)).expect("create vGPU")
}

/// Open `m` through VFIO with [`RAM`], bind the reference driver, boot it.
pub fn driver(m: &Mdev) -> Driver<VfioBackend> {
    let bus = VfioBackend::open(&m.sysfs_path(), RAM).unwrap_or_else(|e| panic!("open {}: {e}", m.uuid));
    let mut d = Driver::probe(bus).unwrap_or_else(|e| panic!("probe {}: {e}", m.uuid));
    d.boot(BootConfig::DEFAULT).unwrap_or_else(|e| panic!("boot {}: {e}", m.uuid));
    d
}

/// `gvt/stats` as `key → value` (lines `key value`; non-numeric values
/// are left out).
pub fn stats(m: &Mdev) -> BTreeMap<String, u64> {
    let p = m.sysfs_path().join("gvt").join("stats");
    let s = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    s.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// One counter of `gvt/stats`; panics (naming the counters there are) if
/// the driver does not export it.
pub fn stat(m: &Mdev, key: &str) -> u64 {
    let s = stats(m);
    *s.get(key).unwrap_or_else(|| panic!("gvt/stats has no {key}; it has {:?}", s.keys().collect::<Vec<_>>()))
}

/// `gvt/state` (idle, runnable, running, failed).
pub fn state(m: &Mdev) -> String {
    let p = m.sysfs_path().join("gvt").join("state");
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string()
}

/// A gvt_rs module parameter, if the module exports it.
pub fn param(name: &str) -> Option<u64> {
    fs::read_to_string(Path::new("/sys/module/gvt_rs/parameters").join(name)).ok()?.trim().parse().ok()
}
