//! Rig self-tests against the kernel's own C sample `mtty`: the peer baseline
//! that later benchmarks compare against, and the proof that the rig can open
//! an mdev with a rust-vmm consumer and hand it to an unmodified QEMU.

use std::sync::Arc;
use std::time::Duration;

use gvt_vmtests::{ensure_module, run_l2, types_of, Mdev};
use vfio_ioctls::{VfioContainer, VfioDevice};

const CONFIG_REGION: u32 = vfio_bindings::bindings::vfio::VFIO_PCI_CONFIG_REGION_INDEX;

fn mtty_type() -> String {
    ensure_module("mtty", &[]);
    types_of("mtty")
        .into_iter()
        .find(|t| t.ends_with("-2"))
        .expect("mtty type with 2 ports")
}

#[test]
#[ignore = "runs inside the VM rig"]
fn mtty_opens_with_vfio_ioctls() {
    let mdev = Mdev::create("mtty", &mtty_type()).expect("create mtty mdev");
    let container = Arc::new(VfioContainer::new(None).expect("open /dev/vfio/vfio"));
    let dev = VfioDevice::new(&mdev.sysfs_path(), container, false).expect("open mdev via VFIO");
    let mut id = [0u8; 4];
    dev.region_read(CONFIG_REGION, &mut id, 0);
    assert_eq!(u16::from_le_bytes([id[0], id[1]]), 0x4348, "mtty vendor id");
    assert_eq!(u16::from_le_bytes([id[2], id[3]]), 0x3253, "mtty device id");
    // mtty exposes BAR0 and BAR1 as 8-byte I/O regions.
    assert_eq!(dev.get_region_size(0), 8);
    assert_eq!(dev.get_region_size(1), 8);
    drop(dev);
    mdev.remove().expect("remove mtty mdev");
}

#[test]
#[ignore = "runs inside the VM rig"]
fn mtty_in_nested_qemu() {
    let mdev = Mdev::create("mtty", &mtty_type()).expect("create mtty mdev");
    let arg = format!("vfio-pci,sysfsdev={}", mdev.sysfs_path().display());
    let r = run_l2(&["-device", &arg], "lspci", Duration::from_secs(240));
    println!("{}", r.output);
    assert_eq!(r.status, Some(0), "nested QEMU failed");
    assert!(
        r.output.contains("L2: pci 0x4348 0x3253"),
        "L2 guest does not see the mtty device"
    );
    mdev.remove().expect("remove mtty mdev");
}
