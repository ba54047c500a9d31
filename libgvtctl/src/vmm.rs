//! Ready-to-paste VMM arguments for a vGPU. Paths are the host's (`/sys/...`), never
//! prefixed with `--root`: the VMM runs on the host.

use crate::uuid::Uuid;
use serde::Serialize;

/// The VMMs gvtctl writes arguments for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vmm {
    Qemu,
    CloudHypervisor,
    Libvirt,
}

/// The device's sysfs path as VMMs expect it.
pub fn sysfs_dev(uuid: &Uuid) -> String {
    format!("/sys/bus/mdev/devices/{uuid}")
}

/// The argument(s) for `vmm`; QEMU's is `-device vfio-pci,sysfsdev=...`, cloud-hypervisor's
/// `--device path=.../` and libvirt's a `<hostdev>` element for the domain XML.
pub fn vmm_args(uuid: &Uuid, vmm: Vmm) -> String {
    match vmm {
        Vmm::Qemu => format!("-device vfio-pci,sysfsdev={}", sysfs_dev(uuid)),
        Vmm::CloudHypervisor => format!("--device path={}/", sysfs_dev(uuid)),
        Vmm::Libvirt => format!(
            "<hostdev mode='subsystem' type='mdev' model='vfio-pci'>\n  <source>\n    <address uuid='{uuid}'/>\n  </source>\n</hostdev>"
        ),
    }
}

/// All three, as carried in JSON output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct VmmArgs {
    pub qemu: String,
    pub cloud_hypervisor: String,
    pub libvirt: String,
}

impl VmmArgs {
    pub fn for_uuid(uuid: &Uuid) -> VmmArgs {
        VmmArgs {
            qemu: vmm_args(uuid, Vmm::Qemu),
            cloud_hypervisor: vmm_args(uuid, Vmm::CloudHypervisor),
            libvirt: vmm_args(uuid, Vmm::Libvirt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_strings() {
        let u = Uuid::parse("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001").unwrap();
        assert_eq!(
            vmm_args(&u, Vmm::Qemu),
            "-device vfio-pci,sysfsdev=/sys/bus/mdev/devices/83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"
        );
        assert_eq!(
            vmm_args(&u, Vmm::CloudHypervisor),
            "--device path=/sys/bus/mdev/devices/83b8f4f2-509f-382f-3c1e-e6bfe0fa1001/"
        );
        assert_eq!(
            vmm_args(&u, Vmm::Libvirt),
            "<hostdev mode='subsystem' type='mdev' model='vfio-pci'>\n  <source>\n    <address uuid='83b8f4f2-509f-382f-3c1e-e6bfe0fa1001'/>\n  </source>\n</hostdev>"
        );
    }
}
