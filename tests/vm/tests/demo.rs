//! The README demo (`cargo xtask demo`): what a user of a vGPU stack does,
//! narrated.  It is also a test: every step asserts what it shows.

use std::fs;
use std::time::Duration;

use gvt_vmtests::{run_l2, types_of, Mdev};

/// The gvt_rs demo: load the driver, show the GVT-g-style types, create two
/// vGPUs, show their ballooning (sysfs and the PVINFO page each guest reads),
/// drive both through the VFIO consumer (vfio-ioctls), then hand one to an
/// unmodified QEMU and show what its guest sees; finally show a third
/// vGPU's screen through a nested QEMU with `display=on` (checked pixel for
/// pixel, saved as a PNG on the host); a fourth vGPU in cloud-hypervisor
/// running the reference guest driver in its guest; last, a fifth vGPU in a
/// nested QEMU whose Linux guest drives it with the native driver
/// `gvt_drm.ko` and shows its console on the vGPU's screen (saved as a PNG).
#[test]
#[ignore = "runs inside the VM rig"]
fn demo_gvt_two_vgpus() {
    use gvt_vmtests::gvt::{
        self, attrs, enable_mem, open, read32, read64, Mapping, PARENT, PVINFO,
    };
    use vfio_bindings::bindings::vfio::{
        VFIO_PCI_BAR0_REGION_INDEX as BAR0, VFIO_PCI_BAR2_REGION_INDEX as BAR2,
    };

    println!("demo: insmod gvt_rs.ko {}", gvt::PARAMS.join(" "));
    gvt::load();
    println!("demo: parent /sys/class/mdev_bus/{PARENT}");
    for t in types_of(PARENT) {
        let d = format!("/sys/class/mdev_bus/{PARENT}/mdev_supported_types/{t}");
        let desc = fs::read_to_string(format!("{d}/description")).unwrap();
        let avail = fs::read_to_string(format!("{d}/available_instances")).unwrap();
        println!(
            "demo: type {t}: available_instances={} | {}",
            avail.trim(),
            desc.trim().replace('\n', ", ")
        );
    }
    let m1 = Mdev::create(PARENT, &gvt::type_mb(64)).expect("create vGPU 1");
    let m2 = Mdev::create(PARENT, &gvt::type_mb(32)).expect("create vGPU 2");
    for (m, name) in [(&m1, "vGPU 1"), (&m2, "vGPU 2")] {
        let a = attrs(m);
        println!(
            "demo: {name} {}: id {}, aperture {:#x}+{:#x}, high GM {:#x}+{:#x}, fences {}+{}",
            m.uuid,
            a.id,
            a.ap_base,
            a.ap_size,
            a.high_base,
            a.high_size,
            a.fence_base,
            a.fence_count
        );
    }
    for t in types_of(PARENT) {
        let avail = fs::read_to_string(format!(
            "/sys/class/mdev_bus/{PARENT}/mdev_supported_types/{t}/available_instances"
        ))
        .unwrap();
        println!(
            "demo: after two creates, {t}: available_instances={}",
            avail.trim()
        );
    }
    let d1 = open(&m1);
    let d2 = open(&m2);
    for (m, d, name) in [(&m1, &d1, "vGPU 1"), (&m2, &d2, "vGPU 2")] {
        enable_mem(d);
        let a = attrs(m);
        let magic = read64(d, BAR0, PVINFO);
        let (base, size) = (
            read32(d, BAR0, PVINFO + 0x40),
            read32(d, BAR0, PVINFO + 0x44),
        );
        println!(
            "demo: {name} through VFIO: PVINFO magic {magic:#x}, vgt_id {}, mappable {base:#x}+{size:#x}, fences {}",
            read32(d, BAR0, PVINFO + 0x0C),
            read32(d, BAR0, PVINFO + 0x50)
        );
        assert_eq!(magic, gvt::VGT_MAGIC);
        assert_eq!((u64::from(base), u64::from(size)), (a.ap_base, a.ap_size));
        let map = Mapping::new(d, BAR2, a.ap_base, 4096).expect("mmap the slice");
        map.write32(0, 0xD000 + a.id as u32);
        println!(
            "demo: {name}: wrote {:#x} through its aperture mapping; region read sees {:#x}",
            0xD000 + a.id,
            read32(d, BAR2, a.ap_base)
        );
    }
    let (a1, a2) = (attrs(&m1), attrs(&m2));
    println!(
        "demo: vGPU 2 reading vGPU 1's slice: {:#x} (ballooned)",
        read32(&d2, BAR2, a1.ap_base)
    );
    assert_eq!(read32(&d2, BAR2, a1.ap_base), 0);
    assert_eq!(read32(&d1, BAR2, a1.ap_base), 0xD000 + a1.id as u32);
    assert_eq!(read32(&d2, BAR2, a2.ap_base), 0xD000 + a2.id as u32);
    drop((d1, d2));
    m2.remove().expect("remove");
    let arg = format!("vfio-pci,sysfsdev={}", m1.sysfs_path().display());
    println!(
        "demo: an unmodified QEMU takes vGPU 1: qemu-system-x86_64 -accel {} ... -device {arg}",
        gvt_vmtests::nested_accel()
    );
    let r = run_l2(&["-device", &arg], "lspci", Duration::from_secs(120));
    for l in r.output.lines().filter(|l| l.starts_with("L2: pci")) {
        println!("demo:   {l}");
    }
    assert!(
        r.output.contains("L2: pci 0x1234 0x6776 0x038000"),
        "L2 does not see the vGPU"
    );
    m1.remove().expect("remove");
    show_the_screen();
    cloud_hypervisor();
    native_console();
    println!("demo: removed every vGPU; done");
}

/// After the QEMU steps: a vGPU in cloud-hypervisor (KVM in L1), with the
/// arguments gvtctl prints for it, running the reference guest driver in L2.
fn cloud_hypervisor() {
    use gvt_vmtests::guest::stat;
    use gvt_vmtests::{ch_vmm_args, gvt, l2_ch_command, ChVm};

    let m = Mdev::create(gvt::PARENT, &gvt::type_mb(32)).expect("create vGPU 4");
    let args = ch_vmm_args(&m.uuid);
    println!(
        "demo: cloud-hypervisor takes vGPU 4: `gvtctl vmm-args {} --vmm cloud-hypervisor` prints {}",
        m.uuid,
        args.join(" ")
    );
    let cmd = l2_ch_command("guestdrv");
    println!(
        "demo: {} {}",
        cmd.iter()
            .map(|a| if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            })
            .collect::<Vec<_>>()
            .join(" "),
        args.join(" ")
    );
    let mut vm = ChVm::start(&cmd, &args);
    let done = vm.wait_for("L2: done", Duration::from_secs(240));
    let secs = vm.started.elapsed().as_secs_f64();
    vm.stop(Duration::from_secs(10));
    let out = vm.output();
    for l in out
        .lines()
        .filter(|l| l.starts_with("L2: pci") || l.starts_with("L2: guestdrv"))
    {
        println!("demo:   {l}");
    }
    assert!(
        done,
        "the L2 guest of cloud-hypervisor did not finish:\n{out}"
    );
    assert!(
        out.contains("L2: guestdrv ok"),
        "the guest driver failed in cloud-hypervisor:\n{out}"
    );
    println!(
        "demo: cloud-hypervisor's guest ran the guest driver in {secs:.1} s: {} submissions accepted, {} refused",
        stat(&m, "submissions_accepted"),
        stat(&m, "submissions_rejected")
    );
    drop(vm);
    m.remove().expect("remove");
}

/// The vGPU's screen: a fresh vGPU in an unmodified QEMU with `display=on`;
/// its guest (the reference guest driver inside L2) draws the test picture
/// with the blitter and flips; QMP `screendump` must equal the picture
/// computed here; the PNG screendump is exported to the host
/// (`target/gvt-demo/screen.png`, see tools/vm-run.sh).
fn show_the_screen() {
    use gvt_vmtests::guest::stat;
    use gvt_vmtests::screen::{export_file, NestedDisplay};
    use gvt_vmtests::{expected_frame, frame_blits, gvt};

    let m = Mdev::create(gvt::PARENT, &gvt::type_mb(32)).expect("create vGPU 3");
    // TCG inside TCG, as the display test: the nested display under KVM on
    // TCG's emulated SVM stalled in this rig.
    let accel = "tcg";
    println!(
        "demo: the vGPU's screen: vGPU 3 ({}) in QEMU -accel {accel} ... -device vfio-pci,id=vgpu0,sysfsdev={},display=on",
        gvt::type_mb(32),
        m.sysfs_path().display()
    );
    let audited0 = stat(&m, "cmds_audited");
    let mut s = NestedDisplay::start(&m, accel, false);
    let (w, h) = (s.width, s.height);
    let show = |s: &NestedDisplay, from: usize| {
        for l in s.q.log[from..]
            .iter()
            .filter(|l| l.starts_with("L2: display"))
        {
            println!("demo:   {l}");
        }
    };
    show(&s, 0);
    let plane = fs::read_to_string(m.sysfs_path().join("gvt/display")).unwrap();
    for l in plane
        .lines()
        .filter(|l| l.starts_with("plane:") || l.starts_with("monitor:"))
    {
        println!("demo:   gvt/display {l}");
    }
    let a = s.screendump();
    a.compare(&expected_frame(1, w, h), w, h)
        .unwrap_or_else(|e| panic!("screendump of frame 1: {e}"));
    println!(
        "demo: QMP screendump: {w}x{h}, every pixel equals the picture of its {} blits (computed here from the same rectangle list)",
        frame_blits(1, w, h).len()
    );
    let png = s.screendump_png();
    assert_eq!(
        png.get(..8),
        Some(&b"\x89PNG\r\n\x1a\n"[..]),
        "QEMU's PNG screendump"
    );
    println!(
        "demo: QMP screendump format png: {} bytes, exported to the host",
        png.len()
    );
    export_file("screen.png", &png);
    let n = s.q.log.len();
    s.flip();
    show(&s, n);
    let b = s.screendump();
    b.compare(&expected_frame(2, w, h), w, h)
        .unwrap_or_else(|e| panic!("screendump after the flip: {e}"));
    println!(
        "demo: after the flip, the screendump equals picture 2 ({} blits)",
        frame_blits(2, w, h).len()
    );
    s.finish();
    println!(
        "demo: the mediator audited {} commands of vGPU 3",
        stat(&m, "cmds_audited") - audited0
    );
    m.remove().expect("remove");
}

/// Last: the native guest driver.  A fifth vGPU in an unmodified QEMU with
/// `display=on`; its Linux guest (the L2 DRM kernel) loads `gvt_drm.ko`
/// (guest-kmod/), gets `/dev/dri/card0` and fbcon on the vGPU, and its
/// console shows a few commands and their output (tools/vm/l2-drm,
/// `console`).  The screendump must show the banner the guest wrote where
/// fbcon puts it (the same check as the `gvt_drm` tests); the PNG is
/// exported to the host (`target/gvt-demo/console.png`).
fn native_console() {
    use gvt_vmtests::drm::{boot_with, check_banner, STEP};
    use gvt_vmtests::gvt;
    use gvt_vmtests::screen::{export_file, DEVICE_ID};
    use std::io::Write;

    let m = Mdev::create(gvt::PARENT, &gvt::type_mb(32)).expect("create vGPU 5");
    println!(
        "demo: the native guest driver: vGPU 5 in QEMU -accel tcg ... -device vfio-pci,sysfsdev={},display=on; its Linux guest loads gvt_drm.ko",
        m.sysfs_path().display()
    );
    let mut l2 = boot_with(&m, "", false);
    for l in l2.q.log.iter().filter(|l| {
        l.starts_with("L2: drm card0")
            || l.starts_with("L2: drm connector")
            || l.starts_with("L2: drm fb0")
    }) {
        println!("demo:   {l}");
    }
    writeln!(l2.tty, "\nconsole").unwrap();
    l2.q.wait_for("L2: drm console shown", STEP);
    // fbcon draws on a workqueue and the screen is read at screendump
    // time: a few tries.
    let shot = format!("/tmp/gvt-demo-console-{}.ppm", l2.pid);
    let mut last = String::new();
    let mut ok = false;
    for _ in 0..20 {
        match check_banner(&l2.qmp.screendump(DEVICE_ID, &shot)) {
            Ok(_) => {
                ok = true;
                break;
            }
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        ok,
        "the guest's console is not on the vGPU's screen: {last}"
    );
    let png = l2.qmp.screendump_as(
        DEVICE_ID,
        &format!("/tmp/gvt-demo-console-{}.png", l2.pid),
        "png",
    );
    println!(
        "demo: the guest's console on the vGPU's screen (fbcon on gvt_drm; banner checked where fbcon puts it): PNG {} bytes, exported to the host",
        png.len()
    );
    export_file("console.png", &png);
    writeln!(l2.tty, "done").unwrap();
    l2.finish(m);
}
