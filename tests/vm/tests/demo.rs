//! The README demo (`cargo xtask demo`): what a user of a vGPU stack does,
//! narrated.  It is also a test: every step asserts what it shows.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use gvt_vmtests::{ensure_module, run_l2, types_of, Mdev};
use vfio_bindings::bindings::vfio::{VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR2_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX};
use vfio_ioctls::{VfioContainer, VfioDevice};

const PARENT: &str = "gvt-sim0";

fn attr(m: &Mdev, name: &str) -> u64 {
    fs::read_to_string(m.sysfs_path().join("gvt").join(name)).unwrap().trim().parse().unwrap()
}

#[test]
#[ignore = "runs inside the VM rig"]
fn demo_two_vgpus_and_an_unmodified_qemu() {
    println!("demo: insmod gvt_rs.ko aperture_mb=256 gm_mb=1024");
    ensure_module("gvt_rs", &["aperture_mb=256", "gm_mb=1024"]);
    println!("demo: /sys/class/mdev_bus/{PARENT}/mdev_supported_types:");
    for t in types_of(PARENT) {
        let d = format!("/sys/class/mdev_bus/{PARENT}/mdev_supported_types/{t}");
        let desc = fs::read_to_string(format!("{d}/description")).unwrap().replace('\n', ", ");
        let avail = fs::read_to_string(format!("{d}/available_instances")).unwrap();
        println!("demo:   {t:<22} available {:>2}  {desc}", avail.trim());
    }
    let a = Mdev::create(PARENT, "gvt_rs-GVTsim_64M").expect("create vGPU A");
    let b = Mdev::create(PARENT, "gvt_rs-GVTsim_128M").expect("create vGPU B");
    for (n, m) in [("A", &a), ("B", &b)] {
        println!(
            "demo: vGPU {n} {}: id {} aperture [{:#x}, +{} MiB) high GM [{:#x}, +{} MiB) fences {}+{}",
            m.uuid,
            attr(m, "vgpu_id"),
            attr(m, "aperture_base"),
            attr(m, "aperture_size") >> 20,
            attr(m, "high_gm_base"),
            attr(m, "high_gm_size") >> 20,
            attr(m, "fence_base"),
            attr(m, "fence_count")
        );
    }
    let avail = fs::read_to_string(format!("/sys/class/mdev_bus/{PARENT}/mdev_supported_types/gvt_rs-GVTsim_64M/available_instances")).unwrap();
    println!("demo: GVTsim_64M instances left after A (64M) + B (128M): {}", avail.trim());
    assert_eq!(avail.trim(), "1");

    let container = Arc::new(VfioContainer::new(None).expect("container"));
    let open = |m: &Mdev| VfioDevice::new(&m.sysfs_path(), container.clone(), false).expect("open vGPU");
    let (da, db) = (open(&a), open(&b));
    for (n, m, d) in [("A", &a, &da), ("B", &b, &db)] {
        let mut cfg = [0u8; 12];
        d.region_read(VFIO_PCI_CONFIG_REGION_INDEX, &mut cfg, 0);
        // BAR0 is a register BAR: one naturally aligned access per read.
        let mut mg = [0u8; 8];
        d.region_read(VFIO_PCI_BAR0_REGION_INDEX, &mut mg, 0x78000);
        let magic = u64::from_le_bytes(mg);
        let rd = |o: u64| {
            let mut v = [0u8; 4];
            d.region_read(VFIO_PCI_BAR0_REGION_INDEX, &mut v, 0x78000 + o);
            u32::from_le_bytes(v) as u64
        };
        println!(
            "demo: vGPU {n} via VFIO: PCI {:02x}{:02x}:{:02x}{:02x} class {:02x}{:02x}{:02x}; PVINFO magic {magic:#x} vgt_id {} mappable {:#x}+{:#x} non-mappable {:#x}+{:#x} fences {}",
            cfg[1], cfg[0], cfg[3], cfg[2], cfg[11], cfg[10], cfg[9],
            rd(0x0c), rd(0x40), rd(0x44), rd(0x48), rd(0x4c), rd(0x50)
        );
        assert_eq!(magic, 0x4776_5447_7654_4776);
        assert_eq!(rd(0x40), attr(m, "aperture_base"));
        assert_eq!(rd(0x48), attr(m, "high_gm_base"));
    }
    // Each vGPU writes its own aperture slice; the other cannot see it.
    let abase = attr(&a, "aperture_base");
    da.region_write(VFIO_PCI_BAR2_REGION_INDEX, b"vGPU A was here", abase);
    let mut seen = [0u8; 15];
    db.region_read(VFIO_PCI_BAR2_REGION_INDEX, &mut seen, abase);
    println!("demo: B reads A's slice at {abase:#x}: {:?} (ballooned: zeros)", std::str::from_utf8(&seen).unwrap_or("?"));
    assert_eq!(seen, [0u8; 15]);
    da.region_read(VFIO_PCI_BAR2_REGION_INDEX, &mut seen, abase);
    println!("demo: A reads its own slice: {:?}", std::str::from_utf8(&seen).unwrap());
    assert_eq!(&seen, b"vGPU A was here");
    drop((da, db));
    b.remove().expect("remove B");

    let arg = format!("vfio-pci,sysfsdev={}", a.sysfs_path().display());
    println!("demo: qemu-system-x86_64 -accel {} ... -device {arg}", gvt_vmtests::nested_accel());
    let r = run_l2(&["-device", &arg], "lspci", Duration::from_secs(240));
    for l in r.output.lines().filter(|l| l.starts_with("L2:")) {
        println!("demo:   {l}");
    }
    assert!(r.output.contains("L2: pci 0x1234 0x6776 0x038000"), "L2 does not see the vGPU");
    a.remove().expect("remove A");
    println!("demo: removed both vGPUs; done");
}
