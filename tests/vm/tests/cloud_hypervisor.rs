//! The vGPU in cloud-hypervisor (v54, static, built by
//! tools/build-cloud-hypervisor.sh): run in L1 with KVM (kvm-amd on TCG's
//! emulated SVM) with exactly the arguments `gvtctl vmm-args UUID --vmm
//! cloud-hypervisor` prints (`--device path=/sys/bus/mdev/devices/$uuid/`),
//! direct kernel boot of the rig's L2 kernel (`noxsave`), and the reference
//! guest driver inside L2 (`l2-guestdrv`: it enables the PCI device itself,
//! since no firmware runs).  The native guest driver there too: the L2 DRM
//! kernel loads `gvt_drm.ko` (no display in cloud-hypervisor: the plane the
//! driver programs is checked through the module's `gvt/display`).  And a
//! remove while cloud-hypervisor holds the vGPU: what it does when the REQ
//! irq fires, and that nothing hangs.

use std::fs;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use gvt_vmtests::guest::stats;
use gvt_vmtests::gvt::{kernel_log, type_mb, PARENT};
use gvt_vmtests::{ch_vmm_args, l2_ch_command, ChVm, Mdev, CLOUD_HYPERVISOR, L2_DIR};

/// L2 under KVM on TCG's SVM boots in seconds; the guest driver's work
/// takes a few more.
const L2_LIMIT: Duration = Duration::from_secs(240);

fn preconditions() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "the rig loads kvm-amd: /dev/kvm must exist"
    );
    assert!(
        Path::new(CLOUD_HYPERVISOR).exists(),
        "{CLOUD_HYPERVISOR} missing: tools/vm-image.sh packs the cached build"
    );
}

fn show(out: &str) {
    for l in out
        .lines()
        .filter(|l| l.contains("L2:") || l.contains("cloud-hypervisor") || l.contains("Error"))
    {
        println!("{l}");
    }
}

#[test]
#[ignore = "runs inside the VM rig"]
fn cloud_hypervisor_runs_the_guest_driver_in_l2() {
    preconditions();
    let v = fs::read_to_string("/proc/version").unwrap_or_default();
    println!("L1: {}", v.trim());
    let ver = std::process::Command::new(CLOUD_HYPERVISOR)
        .arg("--version")
        .output()
        .expect("cloud-hypervisor --version");
    let ver = String::from_utf8_lossy(&ver.stdout).trim().to_string();
    println!("{ver}");
    assert!(ver.starts_with("cloud-hypervisor v54"), "{ver}");
    let m = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU");
    let args = ch_vmm_args(&m.uuid);
    assert_eq!(
        args,
        [
            "--device".to_string(),
            format!("path=/sys/bus/mdev/devices/{}/", m.uuid)
        ],
        "gvtctl vmm-args --vmm cloud-hypervisor"
    );
    let mut vm = ChVm::start(&l2_ch_command("guestdrv"), &args);
    let done = vm.wait_for("L2: done", L2_LIMIT);
    let secs = vm.started.elapsed().as_secs_f64();
    let (stop, killed) = vm.stop(Duration::from_secs(10));
    let out = vm.output();
    show(&out);
    println!(
        "cloud-hypervisor: L2 ran {secs:.1} s; ended by SIGTERM in {:.1} s{}",
        stop.as_secs_f64(),
        if killed { " (needed SIGKILL)" } else { "" }
    );
    assert!(done, "L2 did not finish within {L2_LIMIT:?}:\n{out}");
    assert!(
        out.contains("L2: pci 0x1234 0x6776 0x038000"),
        "L2 sees the vGPU's IDs and class:\n{out}"
    );
    for line in [
        "L2: guestdrv enabled",
        "L2: guestdrv round 2 ok",
        "L2: guestdrv ppgtt ok",
        "L2: guestdrv rejected ok",
        "L2: guestdrv recovered ok",
        "L2: guestdrv ok",
    ] {
        assert!(out.contains(line), "missing {line:?}:\n{out}");
    }
    assert!(!killed, "cloud-hypervisor ignored SIGTERM");
    // What L2 did is what the mediator counted.
    let s = stats(&m);
    println!("stats after L2: {s:?}");
    assert!(
        s.get("submissions_accepted").copied().unwrap_or(0) >= 9,
        "L2's accepted submissions"
    );
    assert!(
        s.get("submissions_rejected").copied().unwrap_or(0) >= 1,
        "L2's refused submission"
    );
    drop(vm);
    m.remove().expect("remove after cloud-hypervisor exited");
}

/// Issue 13's "once under cloud-hypervisor, no display": the L2 DRM
/// kernel in cloud-hypervisor with the vGPU; L2 loads the native driver
/// `gvt_drm.ko` (tools/vm/l2-drm, `gvt.drmcmd=console`: no second serial
/// port here), `/dev/dri/card0` appears with the EDID's modes, the fbdev
/// emulation puts fbcon on the vGPU and the guest's console output is drawn
/// into its framebuffer; the module's `gvt/display` shows the plane the
/// driver programmed; the mediator refused nothing.
#[test]
#[ignore = "runs inside the VM rig"]
fn cloud_hypervisor_runs_the_native_driver_in_l2() {
    preconditions();
    let kernel = format!("{L2_DIR}/bzImage-drm");
    assert!(
        Path::new(&kernel).exists(),
        "the rig packs the L2 DRM kernel as {kernel}"
    );
    let m = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU");
    let mut cmd = l2_ch_command("drm");
    for a in cmd.iter_mut() {
        if *a == format!("{L2_DIR}/bzImage") {
            a.clone_from(&kernel);
        }
        if a.contains("gvt.l2=drm") {
            a.push_str(" gvt.drmcmd=console");
        }
    }
    let mut vm = ChVm::start(&cmd, &ch_vmm_args(&m.uuid));
    let shown = vm.wait_for("L2: drm console shown", L2_LIMIT);
    let display = fs::read_to_string(m.sysfs_path().join("gvt/display")).unwrap_or_default();
    let done = vm.wait_for("L2: done", L2_LIMIT);
    let (_, killed) = vm.stop(Duration::from_secs(10));
    let out = vm.output();
    show(&out);
    println!("gvt/display while L2 ran:\n{display}");
    assert!(
        shown && done,
        "L2 did not finish within {L2_LIMIT:?}:\n{out}"
    );
    for line in [
        "L2: drm card0 0x1234 0x6776 driver gvt_drm",
        "L2: drm connector card0-Virtual-1 connected modes 1024x768",
        "L2: drm fb0: gvt_drmdrmfb frame buffer device; Console: switching to colour frame buffer device 128x48",
        "L2: drm banner",
        "L2: drm ok",
    ] {
        assert!(out.contains(line), "missing {line:?}:\n{out}");
    }
    for bad in ["WARNING:", "BUG:", "Oops", "Call Trace"] {
        assert!(!out.contains(bad), "L2 kernel splat ({bad}):\n{out}");
    }
    assert!(
        display.contains("plane: 1024x768 XR24 stride 4096"),
        "the driver's plane in the module's view:\n{display}"
    );
    assert!(!killed, "cloud-hypervisor ignored SIGTERM");
    let st = stats(&m);
    let refused = gvt_vmtests::guest::refusals(&st);
    assert!(refused.is_empty(), "the mediator refused: {refused:?}");
    drop(vm);
    m.remove().expect("remove after cloud-hypervisor exited");
}

/// Remove the vGPU while cloud-hypervisor runs a guest on it.  The module
/// signals the REQ irq (`vfio_device_ops.request`), and VFIO's remove waits
/// for the VMM to close the device.  cloud-hypervisor (v54) wires no REQ
/// eventfd: it keeps running and the remove keeps waiting — both stay
/// responsive (nothing is stuck in the kernel) — until cloud-hypervisor is
/// ended, after which the remove completes at once.
#[test]
#[ignore = "runs inside the VM rig"]
fn cloud_hypervisor_remove_while_running() {
    preconditions();
    let m = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU");
    let path = m.sysfs_path();
    let mut vm = ChVm::start(&l2_ch_command("hold"), &ch_vmm_args(&m.uuid));
    assert!(
        vm.wait_for("L2: holding", L2_LIMIT),
        "L2 never came up:\n{}",
        vm.output()
    );
    let out = vm.output();
    assert!(
        out.contains("L2: pci 0x1234 0x6776 0x038000"),
        "L2 has the vGPU:\n{out}"
    );
    let log0 = kernel_log().len();
    let (tx, rx) = mpsc::channel();
    let p = path.join("remove");
    let t0 = Instant::now();
    thread::spawn(move || {
        let r = fs::write(&p, "1");
        let _ = tx.send((r.map_err(|e| e.to_string()), t0.elapsed()));
    });
    // The kernel asks (REQ) and waits; cloud-hypervisor does not react.
    let waited = Duration::from_secs(12);
    let early = rx.recv_timeout(waited);
    let log = kernel_log();
    let asked = log[log0.min(log.len())..]
        .lines()
        .filter(|l| l.contains("remove requested, asking the VMM to release it"))
        .count();
    println!(
        "remove: after {waited:?}: {}, cloud-hypervisor {}, REQ asked {asked} time(s)",
        match &early {
            Ok((r, t)) => format!("returned {r:?} after {t:?}"),
            Err(_) => "still waiting".into(),
        },
        match vm.exited() {
            None => "still running".to_string(),
            Some(c) => format!("exited {c:?}"),
        }
    );
    assert!(asked >= 1, "the module signalled REQ on remove");
    // What cloud-hypervisor did: nothing (it has no REQ handling) — it
    // still runs and still holds the device.
    assert!(
        early.is_err(),
        "the remove waits while the VMM holds the vGPU"
    );
    assert!(
        vm.exited().is_none(),
        "cloud-hypervisor kept running:\n{}",
        vm.output()
    );
    // (The bus link /sys/bus/mdev/devices/UUID is gone already: the driver
    // core unlinks it before it waits for the driver's remove.)
    println!(
        "remove: {} while waiting",
        if path.exists() {
            "the sysfs path is still there"
        } else {
            "the sysfs path is gone"
        }
    );
    // Nothing is stuck: the parent's sysfs answers, and a new vGPU can be
    // created and removed meanwhile.
    let t = Instant::now();
    let n = fs::read_dir(format!("/sys/class/mdev_bus/{PARENT}/mdev_supported_types"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(n > 0, "the parent's types are listed");
    let other = Mdev::create(PARENT, &type_mb(32)).expect("create another vGPU meanwhile");
    other.remove().expect("remove the other vGPU meanwhile");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the parent stalled during the remove ({:?})",
        t.elapsed()
    );
    // Ending the VMM releases the device; the remove then completes.
    let (stop, killed) = vm.stop(Duration::from_secs(20));
    println!(
        "cloud-hypervisor ended by SIGTERM in {:.1} s{}",
        stop.as_secs_f64(),
        if killed { " (needed SIGKILL)" } else { "" }
    );
    let (r, t) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the remove completes once cloud-hypervisor is gone");
    println!("remove returned {r:?} after {:.1} s", t.as_secs_f64());
    assert!(r.is_ok(), "remove: {r:?}");
    assert!(!path.exists(), "the vGPU is gone");
    assert!(
        !killed,
        "cloud-hypervisor ended on SIGTERM while its device was being removed"
    );
    std::mem::forget(m);
}
