//! The gvt_rs driver through a real VFIO consumer (rust-vmm's vfio-ioctls,
//! used the way cloud-hypervisor uses it): parent, types, lifecycle, regions.

use std::fs;
use std::sync::Arc;

use gvt_vmtests::{ensure_module, types_of, Mdev};
use vfio_bindings::bindings::vfio::{
    VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR2_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX,
};
use vfio_ioctls::{VfioContainer, VfioDevice};

const PARENT: &str = "gvt-sim0";

fn load() {
    ensure_module("gvt_rs", &["aperture_mb=256", "gm_mb=1024"]);
}

fn smallest_type() -> String {
    load();
    types_of(PARENT)
        .into_iter()
        .find(|t| t.ends_with("GVTsim_32M"))
        .expect("a 32M type")
}

#[test]
#[ignore = "runs inside the VM rig"]
fn parent_and_types_are_registered() {
    load();
    let types = types_of(PARENT);
    assert_eq!(
        types,
        [
            "gvt_rs-GVTsim_128M",
            "gvt_rs-GVTsim_256M",
            "gvt_rs-GVTsim_32M",
            "gvt_rs-GVTsim_64M"
        ]
    );
    let d = format!("/sys/class/mdev_bus/{PARENT}/mdev_supported_types/gvt_rs-GVTsim_64M");
    let desc = fs::read_to_string(format!("{d}/description")).unwrap();
    assert!(
        desc.starts_with("low_gm_size: 64MB\nhigh_gm_size: "),
        "{desc}"
    );
    assert_eq!(
        fs::read_to_string(format!("{d}/available_instances"))
            .unwrap()
            .trim(),
        "4"
    );
    assert_eq!(
        fs::read_to_string(format!("{d}/device_api"))
            .unwrap()
            .trim(),
        "vfio-pci"
    );
}

#[test]
#[ignore = "runs inside the VM rig"]
fn vgpu_opens_with_vfio_ioctls() {
    let mdev = Mdev::create(PARENT, &smallest_type()).expect("create vGPU");
    let g = mdev.sysfs_path().join("gvt");
    let ap_base: u64 = fs::read_to_string(g.join("aperture_base"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ap_size: u64 = fs::read_to_string(g.join("aperture_size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(ap_size, 32 << 20);
    let container = Arc::new(VfioContainer::new(None).expect("container"));
    let dev = VfioDevice::new(&mdev.sysfs_path(), container, false).expect("open vGPU via VFIO");
    let mut cfg = [0u8; 256];
    dev.region_read(VFIO_PCI_CONFIG_REGION_INDEX, &mut cfg, 0);
    assert_eq!(&cfg[0..4], &[0x34, 0x12, 0x76, 0x67], "vendor/device id");
    assert_eq!(&cfg[9..12], &[0x00, 0x80, 0x03], "class 0x038000");
    assert_eq!(dev.get_region_size(VFIO_PCI_BAR0_REGION_INDEX), 16 << 20);
    assert_eq!(dev.get_region_size(VFIO_PCI_BAR2_REGION_INDEX), 256 << 20);
    // Memory decode on (BARs do not respond without it, as on hardware).
    dev.region_write(VFIO_PCI_CONFIG_REGION_INDEX, &2u16.to_le_bytes(), 4);
    let mut magic = [0u8; 8];
    dev.region_read(VFIO_PCI_BAR0_REGION_INDEX, &mut magic, 0x78000);
    assert_eq!(
        u64::from_le_bytes(magic),
        0x4776_5447_7654_4776,
        "PVINFO magic"
    );
    let mut pv = [0u8; 4];
    dev.region_read(VFIO_PCI_BAR0_REGION_INDEX, &mut pv, 0x78040);
    assert_eq!(
        u32::from_le_bytes(pv) as u64,
        ap_base,
        "PVINFO mappable base"
    );
    drop(dev);
    mdev.remove().expect("remove");
}
