//! The README demo (`cargo xtask demo`): what a user of a vGPU stack does,
//! narrated.  It is also a test: every step asserts what it shows.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use gvt_vmtests::{ensure_module, run_l2, types_of, Mdev};
use vfio_ioctls::{VfioContainer, VfioDevice};

#[test]
#[ignore = "runs inside the VM rig"]
fn demo_mdev_to_unmodified_qemu() {
    ensure_module("mtty", &[]);
    println!("demo: mdev parents: {:?}", fs::read_dir("/sys/class/mdev_bus").unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>());
    for t in types_of("mtty") {
        let d = format!("/sys/class/mdev_bus/mtty/mdev_supported_types/{t}");
        println!(
            "demo: type {t}: name={:?} available_instances={}",
            fs::read_to_string(format!("{d}/name")).unwrap_or_default().trim(),
            fs::read_to_string(format!("{d}/available_instances")).unwrap().trim()
        );
    }
    let ty = types_of("mtty").into_iter().last().unwrap();
    let mdev = Mdev::create("mtty", &ty).expect("create");
    println!("demo: created {} ({})", mdev.uuid, mdev.sysfs_path().display());
    {
        let container = Arc::new(VfioContainer::new(None).expect("container"));
        let dev = VfioDevice::new(&mdev.sysfs_path(), container, false).expect("open");
        let mut cfg = [0u8; 4];
        dev.region_read(vfio_bindings::bindings::vfio::VFIO_PCI_CONFIG_REGION_INDEX, &mut cfg, 0);
        println!("demo: opened through VFIO (vfio-ioctls): PCI id {:02x}{:02x}:{:02x}{:02x}", cfg[1], cfg[0], cfg[3], cfg[2]);
        assert_eq!(&cfg, &[0x48, 0x43, 0x53, 0x32]);
    }
    let arg = format!("vfio-pci,sysfsdev={}", mdev.sysfs_path().display());
    println!("demo: qemu-system-x86_64 ... -device {arg}");
    let r = run_l2(&["-device", &arg], "lspci", Duration::from_secs(240));
    for l in r.output.lines().filter(|l| l.starts_with("L2:")) {
        println!("demo:   {l}");
    }
    assert!(r.output.contains("L2: pci 0x4348 0x3253"));
    mdev.remove().expect("remove");
    println!("demo: removed; done");
}
