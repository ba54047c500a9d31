//! vGPU lifecycle edge cases: capacity, duplicate UUIDs, remove while a VMM
//! holds the device (REQ), and unloading the module with live vGPUs.

use std::fs;
use std::io;
use std::path::Path;

use gvt_vmtests::gvt::*;
use gvt_vmtests::{new_uuid, parent_dir, Mdev};
use vfio_bindings::bindings::vfio::VFIO_PCI_BAR0_REGION_INDEX;

fn create_errno(ty: &str, uuid: &str) -> i32 {
    match Mdev::create_with_uuid(PARENT, ty, uuid) {
        Ok(m) => {
            drop(m);
            0
        }
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn live_mdevs() -> usize {
    fs::read_dir("/sys/bus/mdev/devices")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
#[ignore = "runs inside the VM rig"]
fn life_create_beyond_capacity_is_enospc_and_leaks_nothing() {
    load();
    let before = available();
    let live0 = live_mdevs();
    // Fill the aperture with the largest type, then ask for more of each.
    let big = type_mb(256);
    let m = Mdev::create(PARENT, &big).expect("one full-aperture vGPU");
    assert!(
        available().iter().all(|(_, n)| *n == 0),
        "a full-aperture vGPU leaves nothing: {:?}",
        available()
    );
    for (t, _) in &before {
        let u = new_uuid();
        assert_eq!(
            create_errno(t, &u),
            libc::ENOSPC,
            "create {t} beyond capacity"
        );
        assert!(
            !Path::new("/sys/bus/mdev/devices").join(&u).exists(),
            "failed create left {u} behind"
        );
    }
    assert_eq!(live_mdevs(), live0 + 1);
    m.remove().unwrap();
    assert_eq!(
        available(),
        before,
        "capacity back after the failures and the remove"
    );

    // Fill with the smallest type up to max_vgpus / capacity, one more fails.
    let small = type_mb(32);
    let n = before.iter().find(|(t, _)| *t == small).unwrap().1;
    let ms: Vec<Mdev> = (0..n)
        .map(|i| Mdev::create(PARENT, &small).unwrap_or_else(|e| panic!("vGPU {i} of {n}: {e}")))
        .collect();
    assert_eq!(
        create_errno(&small, &new_uuid()),
        libc::ENOSPC,
        "vGPU {} of {n}",
        n + 1
    );
    // Free every other one and refill the holes: no capacity is lost.
    let (keep, free): (Vec<_>, Vec<_>) = ms.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let freed = free.len();
    for (_, m) in free {
        m.remove().unwrap();
    }
    let refill: Vec<Mdev> = (0..freed)
        .map(|_| Mdev::create(PARENT, &small).expect("refill a hole"))
        .collect();
    assert_eq!(create_errno(&small, &new_uuid()), libc::ENOSPC);
    drop(refill);
    drop(keep);
    assert_eq!(
        available(),
        before,
        "capacity back after create/destroy cycles"
    );
    assert_eq!(live_mdevs(), live0);
}

#[test]
#[ignore = "runs inside the VM rig"]
fn life_duplicate_uuid_is_eexist() {
    let ty = type_mb(32);
    let before = available();
    let m = Mdev::create(PARENT, &ty).unwrap();
    assert_eq!(
        create_errno(&ty, &m.uuid),
        libc::EEXIST,
        "same UUID, same type"
    );
    assert_eq!(
        create_errno(&type_mb(64), &m.uuid),
        libc::EEXIST,
        "same UUID, another type"
    );
    assert_eq!(
        create_errno(&ty, "not-a-uuid"),
        libc::EINVAL,
        "malformed UUID"
    );
    assert_eq!(attrs(&m).ap_size, 32 << 20, "the first vGPU is untouched");
    m.remove().unwrap();
    assert_eq!(available(), before);
}

#[test]
#[ignore = "runs inside the VM rig"]
fn life_remove_while_held_signals_req_and_waits() {
    let ty = type_mb(32);
    let before = available();
    let m = Mdev::create(PARENT, &ty).unwrap();
    let path = m.sysfs_path();
    let holder = ReqHolder::start(open_canonical(&m));
    m.remove().expect("remove completes once the VMM lets go");
    assert!(
        holder.released(),
        "remove returned before the holder closed the device"
    );
    let (got, magic) = holder.finish();
    assert!(got >= 1, "REQ eventfd fired");
    assert_eq!(
        magic, VGT_MAGIC,
        "the held device kept working until released"
    );
    assert!(!path.exists(), "device gone");
    assert_eq!(available(), before);
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

#[test]
#[ignore = "runs inside the VM rig"]
fn life_rmmod_with_live_vgpus() {
    load();
    let before = available();
    // Open vGPU: the module is in use; unload fails and changes nothing.
    let m = Mdev::create(PARENT, &type_mb(32)).unwrap();
    let dev = open(&m);
    let e = delete_module("gvt_rs").expect_err("unload while a VMM holds a vGPU");
    assert!(
        matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EBUSY)),
        "{e}"
    );
    enable_mem(&dev);
    assert_eq!(
        read64(&dev, VFIO_PCI_BAR0_REGION_INDEX, PVINFO),
        VGT_MAGIC,
        "vGPU still works"
    );
    drop(dev);
    // Live but closed vGPUs: unload removes them cleanly.
    let m2 = Mdev::create(PARENT, &type_mb(64)).unwrap();
    let paths = [m.sysfs_path(), m2.sysfs_path()];
    delete_module("gvt_rs").expect("unload with two live, closed vGPUs");
    std::mem::forget(m); // already gone with the module
    std::mem::forget(m2);
    assert!(
        paths.iter().all(|p| !p.exists()),
        "vGPUs removed with the module"
    );
    assert!(!parent_dir(PARENT).exists(), "parent unregistered");
    assert!(!Path::new("/sys/module/gvt_rs").exists());
    // Reload: a fresh parent with full capacity, and it works.
    load();
    assert_eq!(available(), before, "full capacity after reload");
    let m = Mdev::create(PARENT, &type_mb(32)).unwrap();
    let dev = open(&m);
    enable_mem(&dev);
    assert_eq!(read64(&dev, VFIO_PCI_BAR0_REGION_INDEX, PVINFO), VGT_MAGIC);
    drop(dev);
    m.remove().unwrap();
}
