//! PCI-function parents: the rig's spare functions (tools/vm-run.sh gives the
//! VM two QEMU `pci-testdev`s, 1b36:0005, that no driver claims) and binding
//! them to the gvt_rs PCI driver by `driver_override`, as on a real host.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// `/sys/bus/pci/devices/<bdf>`.
pub fn pci_dir(bdf: &str) -> PathBuf {
    Path::new("/sys/bus/pci/devices").join(bdf)
}

fn read_hex(p: &Path) -> Option<u32> {
    let s = fs::read_to_string(p).ok()?;
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// The rig's spare PCI functions (QEMU `pci-testdev`), by address, sorted.
/// Panics when the rig gave none: every PCI-parent test needs them.
pub fn spare_functions() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir("/sys/bus/pci/devices")
        .expect("/sys/bus/pci/devices")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|bdf| {
            let d = pci_dir(bdf);
            read_hex(&d.join("vendor")) == Some(0x1b36) && read_hex(&d.join("device")) == Some(5)
        })
        .collect();
    v.sort();
    assert!(
        v.len() >= 2,
        "the rig gives the VM two spare pci-testdev functions (tools/vm-run.sh); found {v:?}"
    );
    v
}

/// The name of the driver `bdf` is bound to, if any.
pub fn driver_of(bdf: &str) -> Option<String> {
    fs::read_link(pci_dir(bdf).join("driver"))
        .ok()
        .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// `driver_override` of `bdf` (`None` when unset).
pub fn driver_override(bdf: &str) -> Option<String> {
    let s = fs::read_to_string(pci_dir(bdf).join("driver_override")).expect("driver_override");
    let s = s.trim();
    (s != "(null)" && !s.is_empty()).then(|| s.to_string())
}

/// Set (`Some`) or clear (`None`) `driver_override` of `bdf`.
pub fn set_driver_override(bdf: &str, driver: Option<&str>) -> io::Result<()> {
    fs::write(pci_dir(bdf).join("driver_override"), driver.unwrap_or("\n"))
}

/// `echo BDF > /sys/bus/pci/drivers_probe`.
pub fn drivers_probe(bdf: &str) -> io::Result<()> {
    fs::write("/sys/bus/pci/drivers_probe", bdf)
}

/// `echo BDF > /sys/bus/pci/drivers/gvt_rs/{bind,unbind}`.
pub fn gvt_rs_driver_attr(attr: &str, bdf: &str) -> io::Result<()> {
    fs::write(Path::new("/sys/bus/pci/drivers/gvt_rs").join(attr), bdf)
}

/// A spare function bound to gvt_rs the documented way (driver_override,
/// then drivers_probe); unbound, and its override cleared, when dropped,
/// so later tests find the rig as it booted.
pub struct PciParent {
    pub bdf: String,
}

impl PciParent {
    /// Bind `bdf` to gvt_rs (the module must be loaded).
    pub fn bind(bdf: &str) -> PciParent {
        assert_eq!(driver_of(bdf), None, "{bdf} is free before the test");
        set_driver_override(bdf, Some("gvt_rs")).expect("set driver_override");
        drivers_probe(bdf).expect("drivers_probe");
        assert_eq!(
            driver_of(bdf).as_deref(),
            Some("gvt_rs"),
            "{bdf} bound to gvt_rs by driver_override"
        );
        PciParent {
            bdf: bdf.to_string(),
        }
    }

    /// The parent's name under `/sys/class/mdev_bus` (its PCI address).
    pub fn name(&self) -> &str {
        &self.bdf
    }

    /// `echo BDF > /sys/bus/pci/drivers/gvt_rs/unbind`.
    pub fn unbind(&self) -> io::Result<()> {
        gvt_rs_driver_attr("unbind", &self.bdf)
    }
}

impl Drop for PciParent {
    fn drop(&mut self) {
        if driver_of(&self.bdf).as_deref() == Some("gvt_rs") {
            let _ = self.unbind();
        }
        let _ = set_driver_override(&self.bdf, None);
    }
}
