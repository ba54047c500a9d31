//! The native guest driver under IGT (issue 13's external validation): an
//! unmodified nested QEMU 10 (KVM when the rig has it) boots the L2 DRM
//! kernel with the vGPU (`-device vfio-pci,...`) and the L2 initramfs with IGT's
//! segment (tools/build-igt.sh, `/l2/initrd-igt.gz`); the L2 program
//! (tools/vm/l2-igt) loads `gvt_drm.ko` and runs IGT's runner over the
//! tests of `tests/vm/igt/tests.txt`.  Every result must be what the
//! checked-in expectations say (`tests/vm/igt/gvt_drm-{skips,fails,flakes}.txt`,
//! drm-ci style, each entry with its reason; `gvt_vmtests::igt`): pass
//! unless listed.  Any change fails the test, a fix included (update the
//! files).  The results are exported as `gvt_drm_igt-results.txt`.

use std::fs;
use std::time::{Duration, Instant};

use gvt_vmtests::gvt::*;
use gvt_vmtests::igt;
use gvt_vmtests::screen::{export_file, Qemu, DEVICE_ID};
use gvt_vmtests::{guest::stats, Mdev, L2_DIR};

const TESTS: &str = include_str!("../igt/tests.txt");
const SKIPS: &str = include_str!("../igt/gvt_drm-skips.txt");
const FAILS: &str = include_str!("../igt/gvt_drm-fails.txt");
const FLAKES: &str = include_str!("../igt/gvt_drm-flakes.txt");

/// Deadlines (not timed assertions): the L2 boot, and the whole IGT run,
/// nested TCG inside the rig's TCG guest.
const BOOT: Duration = Duration::from_secs(900);
const RUN: Duration = Duration::from_secs(5400);
const STEP: Duration = Duration::from_secs(300);
/// The runner reports each subtest as it starts and ends, and stops one at
/// its own per-test limit (2 min): an L2 that says nothing for this long is
/// hung (it fails the test then, not at `RUN`).
const QUIET: Duration = Duration::from_secs(600);
/// The L2 program's report after the results.
const DUMP: Duration = Duration::from_secs(1200);
/// An L2 kernel that printed nothing by then never started.
const NO_START: Duration = Duration::from_secs(120);

fn binaries() -> Vec<&'static str> {
    TESTS
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
#[ignore = "runs inside the VM rig"]
fn gvt_drm_igt() {
    let (kernel, initrd) = (
        format!("{L2_DIR}/bzImage-drm"),
        format!("{L2_DIR}/initrd-igt.gz"),
    );
    for f in [&kernel, &initrd] {
        assert!(
            std::path::Path::new(f).exists(),
            "the rig packs {f} (tools/build-l2-drm-kernel.sh, tools/build-igt.sh)"
        );
    }
    let expected = igt::parse_expectations(
        ("gvt_drm-skips.txt", SKIPS),
        ("gvt_drm-fails.txt", FAILS),
        ("gvt_drm-flakes.txt", FLAKES),
    )
    .unwrap_or_else(|e| panic!("the expectations files:\n{e}"));
    let m = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU");
    fs::write(m.sysfs_path().join("gvt/dmabuf"), "0").expect("gvt/dmabuf");
    // KVM when the rig has it (TCG's emulated SVM: the L2 runs one level of
    // emulation down instead of two); no display (IGT needs none; QEMU's
    // display polling is what stalled the nested display under KVM here).
    let accel = gvt_vmtests::nested_accel();
    let mut args = gvt_vmtests::l2_qemu_command_accel(accel, "igt");
    for a in args.iter_mut() {
        if *a == format!("{L2_DIR}/bzImage") {
            a.clone_from(&kernel);
        } else if *a == format!("{L2_DIR}/initrd.gz") {
            a.clone_from(&initrd);
        } else if *a == "128M" {
            // IGT's libraries and tests unpacked, and its framebuffers.
            *a = "512M".into();
        }
    }
    let dev = format!(
        "vfio-pci,id={DEVICE_ID},sysfsdev={}",
        m.sysfs_path().display()
    );
    args.extend(["-device".to_string(), dev]);
    println!("nested QEMU: {}", args.join(" "));
    let t0 = Instant::now();
    // As gvt_vmtests::run_l2_accel: an L2 whose kernel never printed its
    // first line (KVM on TCG's emulated SVM) is retried once, and counted.
    let mut q = Qemu::spawn(&args);
    if let Err(e) = q.try_wait_for("Linux version", NO_START) {
        println!(
            "{} ({e})",
            gvt_vmtests::nested_retry_marker(accel, NO_START)
        );
        drop(q);
        q = Qemu::spawn(&args);
    }
    let card = q.wait_for("L2: igt card0", BOOT);
    assert!(
        card.contains("driver gvt_drm"),
        "gvt_drm binds the vGPU: {card}"
    );
    q.wait_for("L2: igt runner start", STEP);
    let t1 = Instant::now();
    q.wait_for_talking("L2: igt runner end", RUN, QUIET);
    let ran = t1.elapsed();
    q.wait_for("L2: igt-results ", STEP);
    // What IGT said of each failure, over L2's serial console (slow under
    // nested virtualization: a few thousand lines take minutes).
    q.wait_for("L2: done", DUMP);
    let st = q.child.wait().expect("qemu exit");
    let log = q.log.join("\n");
    assert!(st.success(), "QEMU exit status {st}");
    assert!(
        !log.contains("L2: igt FAILED") && log.contains("L2: igt ok"),
        "the L2 program failed (see its lines above)"
    );
    // The L2 program rewrites IGT's own words (its WARNING: lines), so what
    // is left of these is the L2 kernel's.
    for bad in ["WARNING:", "BUG:", "Oops", "Call Trace"] {
        assert!(!log.contains(bad), "L2 kernel splat ({bad})");
    }
    let results = igt::parse_results(&log);
    let listing: String = results.iter().map(|(n, r)| format!("{n} {r}\n")).collect();
    export_file("gvt_drm_igt-results.txt", listing.as_bytes());
    println!(
        "igt: {} results in {:.0} s of IGT ({:.0} s in all): {}",
        results.len(),
        ran.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        igt::tally(&results)
    );
    let diffs = igt::compare(&results, &expected, &binaries());
    assert!(
        diffs.is_empty(),
        "IGT's results differ from tests/vm/igt/gvt_drm-{{skips,fails,flakes}}.txt ({} differences):\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    println!(
        "igt: every result as expected ({} listed: {} skips, {} flakes, {} other)",
        expected.len(),
        expected.values().filter(|e| e.result == "skip").count(),
        expected.values().filter(|e| e.result == igt::FLAKE).count(),
        expected
            .values()
            .filter(|e| e.result != "skip" && e.result != igt::FLAKE)
            .count()
    );
    let st = stats(&m);
    let refused = gvt_vmtests::guest::refusals(&st);
    assert!(refused.is_empty(), "the mediator refused: {refused:?}");
    m.remove().expect("remove");
}

/// The checked-in expectations parse (every entry with its reason), and
/// name only tests of the list (host).
#[test]
fn igt_expectations_are_well_formed() {
    let e = igt::parse_expectations(
        ("gvt_drm-skips.txt", SKIPS),
        ("gvt_drm-fails.txt", FAILS),
        ("gvt_drm-flakes.txt", FLAKES),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let bins = binaries();
    assert_eq!(bins.len(), 13, "issue 13's list: {bins:?}");
    for (name, x) in &e {
        let b = name.split('@').next().unwrap_or("");
        assert!(
            bins.contains(&b),
            "{}: {name} is not a test of tests.txt",
            x.at
        );
    }
}
