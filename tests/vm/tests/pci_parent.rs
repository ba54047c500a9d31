//! PCI-function parents: a spare PCI function (the rig's QEMU `pci-testdev`s)
//! bound to the gvt_rs PCI driver by `driver_override` becomes an mdev parent
//! at `/sys/bus/pci/devices/BDF`, as i915's and NVIDIA's are, next to the
//! virtual parent gvt-sim0.  Checked: it binds only by driver_override (no ID
//! table, `new_id` refused, a second bind refused), the types, a vGPU through
//! VFIO, unbinding with live vGPUs (one held by a VMM: REQ, then a clean
//! removal), rebinding, two PCI parents and `rmmod` with them bound, and
//! `virtual_parent=0`.  The rig judges every run on a clean kernel log too.

use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::thread;

use gvt_vmtests::gvt::*;
use gvt_vmtests::pci::*;
use gvt_vmtests::{parent_dir, types_of, Mdev};
use vfio_bindings::bindings::vfio::VFIO_PCI_BAR0_REGION_INDEX;

/// What a fresh parent offers with the rig's parameters (aperture_mb=256
/// gm_mb=1024): instances of the 32M, 64M, 128M and 256M types.
const FULL: [(&str, u64); 4] = [
    ("gvt_rs-GVTsim_128M", 2),
    ("gvt_rs-GVTsim_256M", 1),
    ("gvt_rs-GVTsim_32M", 8),
    ("gvt_rs-GVTsim_64M", 4),
];

fn full() -> Vec<(String, u64)> {
    FULL.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

fn errno<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// The type of `parent` whose name ends with `GVTsim_<mb>M`.
fn type_on(parent: &str, mb: u64) -> String {
    let suffix = format!("GVTsim_{mb}M");
    types_of(parent)
        .into_iter()
        .find(|t| t.ends_with(&suffix))
        .unwrap_or_else(|| panic!("no {suffix} type on {parent}"))
}

/// The module loaded with the rig's parameters (gvt-sim0 there: a test that
/// failed half-way may have left it loaded with `virtual_parent=0`) and no
/// vGPU left on gvt-sim0.
fn fresh() {
    if Path::new("/sys/module/gvt_rs").exists() && !parent_dir(PARENT).exists() {
        delete_module("gvt_rs").expect("unload gvt_rs left without gvt-sim0");
    }
    load();
    for e in fs::read_dir("/sys/bus/mdev/devices").unwrap() {
        let p = e.unwrap().path();
        let _ = fs::write(p.join("remove"), "1");
    }
    assert_eq!(available(), full(), "gvt-sim0 at full capacity");
}

fn delete_module(name: &str) -> io::Result<()> {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name; O_NONBLOCK: fail instead of waiting.
    let r = unsafe { libc::syscall(libc::SYS_delete_module, c.as_ptr(), libc::O_NONBLOCK) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn insmod(extra: &[&str]) {
    let st = Command::new("insmod")
        .arg("/lib/modules/gvt_rs.ko")
        .args(PARAMS)
        .args(extra)
        .status()
        .unwrap();
    assert!(st.success(), "insmod gvt_rs {extra:?}");
}

/// The gvt_rs parents under /sys/class/mdev_bus (other drivers' left out).
fn mdev_bus_names() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir("/sys/class/mdev_bus")
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.retain(|p| {
        fs::read_dir(parent_dir(p).join("mdev_supported_types")).is_ok_and(|mut d| {
            d.any(|t| t.is_ok_and(|t| t.file_name().to_string_lossy().starts_with("gvt_rs-")))
        })
    });
    v.sort();
    v
}

#[test]
#[ignore = "runs inside the VM rig"]
fn pci_parent_binds_by_driver_override_only() {
    fresh();
    let spare = spare_functions();
    let (a, b) = (&spare[0], &spare[1]);
    for f in [a, b] {
        assert_eq!(driver_of(f), None, "no driver claims the spare {f}");
        assert_eq!(driver_override(f), None);
    }
    // No ID table: binding by name alone finds no match; new_id is refused
    // (the PCI core takes only driver_data of a table entry, and there is none).
    assert_eq!(
        errno(gvt_rs_driver_attr("bind", b)),
        libc::ENODEV,
        "bind without driver_override"
    );
    assert_eq!(
        errno(gvt_rs_driver_attr("new_id", "1b36 0005")),
        libc::EINVAL,
        "new_id"
    );
    drivers_probe(b).expect("drivers_probe of an unclaimed function");
    assert_eq!(driver_of(b), None, "nothing bound {b}");

    let p = PciParent::bind(a);
    // The parent is the PCI function, as i915's is.
    let canon = fs::canonicalize(parent_dir(p.name())).unwrap();
    assert_eq!(canon, fs::canonicalize(pci_dir(a)).unwrap());
    assert!(
        canon
            .to_string_lossy()
            .starts_with("/sys/devices/pci0000:00/"),
        "{}",
        canon.display()
    );
    assert!(pci_dir(a).join("mdev_supported_types").is_dir());
    assert_eq!(mdev_bus_names(), [a.as_str(), "gvt-sim0"]);
    // The same types as the virtual parent, each with its own full capacity.
    assert_eq!(types_of(a), types_of(PARENT));
    assert_eq!(available_on(a), full());
    for t in types_of(a) {
        for f in ["name", "description", "device_api"] {
            let on = |p: &str| {
                fs::read_to_string(parent_dir(p).join("mdev_supported_types").join(&t).join(f))
                    .unwrap()
            };
            assert_eq!(on(a), on(PARENT), "{t}/{f}");
        }
    }
    // The function's hardware is not touched: never enabled.
    assert_eq!(
        fs::read_to_string(pci_dir(a).join("enable"))
            .unwrap()
            .trim(),
        "0"
    );
    // A second bind of a bound function is refused; probing again changes nothing.
    assert_eq!(
        errno(gvt_rs_driver_attr("bind", a)),
        libc::EBUSY,
        "second bind"
    );
    drivers_probe(a).expect("drivers_probe of a bound function");
    assert_eq!(driver_of(a).as_deref(), Some("gvt_rs"));
    assert_eq!(mdev_bus_names(), [a.as_str(), "gvt-sim0"]);

    drop(p);
    assert_eq!(driver_of(a), None);
    assert_eq!(driver_override(a), None);
    assert!(!pci_dir(a).join("mdev_supported_types").exists());
    assert_eq!(mdev_bus_names(), ["gvt-sim0"]);
}

#[test]
#[ignore = "runs inside the VM rig"]
fn pci_parent_vgpu_through_vfio() {
    fresh();
    let spare = spare_functions();
    let p = PciParent::bind(&spare[0]);
    let ty = type_on(p.name(), 64);
    let m = Mdev::create(p.name(), &ty).expect("create on the PCI parent");
    // The vGPU is the function's child; the parents are independent GPUs.
    let canon = fs::canonicalize(m.sysfs_path()).unwrap();
    assert_eq!(
        canon,
        fs::canonicalize(pci_dir(&p.bdf)).unwrap().join(&m.uuid)
    );
    let v = Mdev::create(PARENT, &type_mb(64)).expect("create on gvt-sim0");
    let (am, av) = (attrs(&m), attrs(&v));
    assert_eq!((am.id, am.ap_base), (1, 0), "first vGPU of the PCI parent");
    assert_eq!((av.id, av.ap_base), (1, 0), "first vGPU of gvt-sim0");
    let left = |avail: Vec<(String, u64)>| avail.into_iter().find(|(t, _)| *t == ty).unwrap().1;
    assert_eq!(left(available_on(p.name())), 3);
    assert_eq!(left(available()), 3);
    assert!(m.sysfs_path().join("iommu_group").exists());

    // A VMM's view through VFIO.
    let dev = open(&m);
    assert_eq!(cfg16(&dev, 0), VENDOR);
    assert_eq!(cfg16(&dev, 2), DEVICE);
    enable_mem(&dev);
    assert_eq!(read64(&dev, VFIO_PCI_BAR0_REGION_INDEX, PVINFO), VGT_MAGIC);
    drop(dev);
    m.remove().unwrap();
    v.remove().unwrap();
    assert_eq!(available_on(p.name()), full());
    assert_eq!(available(), full());
}

#[test]
#[ignore = "runs inside the VM rig"]
fn pci_parent_unbind_with_live_vgpus_is_clean_and_rebinds() {
    fresh();
    let spare = spare_functions();
    let p = PciParent::bind(&spare[0]);
    let bdf = p.bdf.clone();
    // A vGPU of gvt-sim0, open: unbinding the PCI parent leaves it alone.
    let v = Mdev::create(PARENT, &type_mb(32)).unwrap();
    let vdev = open(&v);
    enable_mem(&vdev);
    // On the PCI parent: one closed vGPU and one a VMM holds (REQ wired).
    let closed = Mdev::create(&bdf, &type_on(&bdf, 32)).unwrap();
    let held = Mdev::create(&bdf, &type_on(&bdf, 64)).unwrap();
    let paths = [closed.sysfs_path(), held.sysfs_path()];
    let holder = ReqHolder::start(open_canonical(&held));
    p.unbind().expect("unbind completes once the VMM lets go");
    assert!(
        holder.released(),
        "unbind returned before the VMM closed the vGPU"
    );
    let (got, magic) = holder.finish();
    assert!(got >= 1, "the VMM was asked (REQ) to release the vGPU");
    assert_eq!(magic, VGT_MAGIC, "the held vGPU worked until released");
    std::mem::forget(closed); // gone with the parent
    std::mem::forget(held);
    assert!(paths.iter().all(|p| !p.exists()), "vGPUs removed");
    assert_eq!(driver_of(&bdf), None);
    assert!(!parent_dir(&bdf).exists(), "parent unregistered");
    assert!(!pci_dir(&bdf).join("mdev_supported_types").exists());
    // gvt-sim0 and its open vGPU carry on.
    assert_eq!(read64(&vdev, VFIO_PCI_BAR0_REGION_INDEX, PVINFO), VGT_MAGIC);

    // Rebind (driver_override is still set): a fresh parent at full capacity.
    drivers_probe(&bdf).unwrap();
    assert_eq!(driver_of(&bdf).as_deref(), Some("gvt_rs"));
    assert_eq!(available_on(&bdf), full());
    let m = Mdev::create(&bdf, &type_on(&bdf, 256)).unwrap();
    let dev = open(&m);
    enable_mem(&dev);
    assert_eq!(read64(&dev, VFIO_PCI_BAR0_REGION_INDEX, PVINFO), VGT_MAGIC);
    drop(dev);
    m.remove().unwrap();
    drop(vdev);
    v.remove().unwrap();
    drop(p);
    assert_eq!(available(), full());
}

#[test]
#[ignore = "runs inside the VM rig"]
fn pci_parent_rmmod_with_two_bound_and_virtual_parent_off() {
    fresh();
    let spare = spare_functions();
    let pa = PciParent::bind(&spare[0]);
    let pb = PciParent::bind(&spare[1]);
    let (a, b) = (pa.bdf.clone(), pb.bdf.clone());
    assert_eq!(mdev_bus_names(), [a.as_str(), b.as_str(), "gvt-sim0"]);
    let ma = Mdev::create(&a, &type_on(&a, 32)).unwrap();
    let mb = Mdev::create(&b, &type_on(&b, 128)).unwrap();
    let mv = Mdev::create(PARENT, &type_mb(64)).unwrap();
    let paths = [ma.sysfs_path(), mb.sysfs_path(), mv.sysfs_path()];
    // Held: the module is in use and stays.
    let dev = open(&ma);
    let e = delete_module("gvt_rs").expect_err("unload while a VMM holds a vGPU");
    assert!(
        matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EBUSY)),
        "{e}"
    );
    enable_mem(&dev);
    assert_eq!(read64(&dev, VFIO_PCI_BAR0_REGION_INDEX, PVINFO), VGT_MAGIC);
    drop(dev);
    // Closed: unloading unbinds both functions and removes every vGPU.
    delete_module("gvt_rs").expect("unload with three live, closed vGPUs");
    for m in [ma, mb, mv] {
        std::mem::forget(m);
    }
    assert!(paths.iter().all(|p| !p.exists()), "vGPUs removed");
    assert!(mdev_bus_names().is_empty(), "{:?}", mdev_bus_names());
    for f in [&a, &b] {
        assert_eq!(driver_of(f), None);
        assert_eq!(driver_override(f).as_deref(), Some("gvt_rs"));
    }
    assert!(!Path::new("/sys/module/gvt_rs").exists());

    // Loaded again without the virtual parent: the functions whose
    // driver_override names gvt_rs are bound at once, and are the only parents.
    insmod(&["virtual_parent=0"]);
    assert_eq!(mdev_bus_names(), [a.as_str(), b.as_str()]);
    assert_eq!(available_on(&b), full());
    let m = Mdev::create(&b, &type_on(&b, 64)).unwrap();
    let dev = open(&m);
    enable_mem(&dev);
    assert_eq!(read64(&dev, VFIO_PCI_BAR0_REGION_INDEX, PVINFO), VGT_MAGIC);
    drop(dev);
    m.remove().unwrap();
    delete_module("gvt_rs").expect("unload");
    assert!(mdev_bus_names().is_empty());

    // And with it (the default) for the tests that follow.
    insmod(&[]);
    assert_eq!(mdev_bus_names(), [a.as_str(), b.as_str(), "gvt-sim0"]);
    drop(pa);
    drop(pb);
    assert_eq!(mdev_bus_names(), ["gvt-sim0"]);
    assert_eq!(available(), full());
}

/// The function hot-unplugged (sysfs `remove`) while a thread keeps creating
/// and removing vGPUs on it: the creates racing the removal fail cleanly
/// (the mdev core refuses them once the parent is going, then the type's
/// `create` file is gone), no vGPU is left, and after a rescan the function
/// is back, unbound, and binds again to a parent at full capacity.
#[test]
#[ignore = "runs inside the VM rig"]
fn pci_parent_hot_unplug_while_creating() {
    fresh();
    let spare = spare_functions();
    let p = PciParent::bind(&spare[1]);
    let bdf = p.bdf.clone();
    let ty = type_on(&bdf, 32);
    let create = parent_dir(&bdf)
        .join("mdev_supported_types")
        .join(&ty)
        .join("create");
    // A vGPU opened and closed once: the parent's GPU has run.
    let m = Mdev::create(&bdf, &ty).unwrap();
    let dev = open(&m);
    enable_mem(&dev);
    assert_eq!(read64(&dev, VFIO_PCI_BAR0_REGION_INDEX, PVINFO), VGT_MAGIC);
    drop(dev);
    std::mem::forget(m); // goes with the function
    let (tx, rx) = mpsc::channel();
    let racer = thread::spawn(move || {
        let mut made = 0u32;
        for i in 0..100_000 {
            let u = gvt_vmtests::new_uuid();
            match fs::write(&create, &u) {
                Ok(()) => {
                    made += 1;
                    let _ = fs::write(
                        Path::new("/sys/bus/mdev/devices").join(&u).join("remove"),
                        "1",
                    );
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    return (made, e.raw_os_error())
                }
                Err(e) => {
                    // ENODEV: the parent is being unregistered.
                    assert!(
                        matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::ENOSPC)),
                        "create #{i}: {e}"
                    );
                }
            }
            if i == 3 {
                tx.send(()).unwrap();
            }
        }
        (made, None)
    });
    rx.recv().unwrap();
    fs::write(pci_dir(&bdf).join("remove"), "1").expect("remove the function");
    let (made, end) = racer.join().unwrap();
    assert!(made >= 1, "the racer created vGPUs before the unplug");
    assert_eq!(
        end,
        Some(libc::ENOENT),
        "the type's create file went with the parent"
    );
    assert!(!pci_dir(&bdf).exists());
    assert!(!parent_dir(&bdf).exists());
    let left: Vec<String> = fs::read_dir("/sys/bus/mdev/devices")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "no vGPU left: {left:?}");
    // Back after a rescan: a new device, no override, no driver.
    fs::write("/sys/bus/pci/rescan", "1").unwrap();
    assert!(pci_dir(&bdf).exists(), "{bdf} back after the rescan");
    assert_eq!(driver_of(&bdf), None);
    assert_eq!(driver_override(&bdf), None);
    drop(p);
    let p = PciParent::bind(&bdf);
    assert_eq!(available_on(p.name()), full());
    let m = Mdev::create(p.name(), &type_on(p.name(), 64)).unwrap();
    m.remove().unwrap();
    drop(p);
    assert_eq!(available(), full());
}
