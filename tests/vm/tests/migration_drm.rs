//! Issue 14's last "done when" line, now that issue 13's native driver has
//! landed: migrate a running VM whose **fbcon is on the vGPU** (the guest's
//! own kernel console, drawn by gvt_drm) to a vGPU with other slices, with
//! two unmodified nested QEMUs, and compare screendumps.
//!
//! QEMU A boots the L2 DRM kernel on vGPU 1 (`display=on`,
//! `enable-migration=on`); gvt_drm binds, fbcon draws L2's banner.  QEMU B
//! waits (`-incoming`) with the same machine on vGPU 2, whose aperture and
//! high slices differ.  QMP `migrate` moves the running guest; then:
//! - B's screendump equals A's, pixel for pixel (the plane, its GGTT
//!   entries behind the guest's view and the framebuffer pages moved);
//! - the guest's console keeps drawing on B: L2 prints a session on fbcon
//!   (CPU writes to GEM pages mapped through vGPU 2's GGTT), the banner
//!   stays, and the screen changes where the session is;
//! - a KMS commit on B with vblank interrupts over MSI: libdrm's modetest
//!   sets the mode and its SMPTE bars are on B's screen, pixel for pixel,
//!   and no commit waited for a vblank that never came;
//! - the mediator refused nothing, L2 logged no splat, vGPU 1 is reusable.

use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

use gvt_vmtests::drm::{check_banner, check_smpte, command, wait_screen, L2Drm, BOOT, STEP};
use gvt_vmtests::gvt::*;
use gvt_vmtests::screen::{connect, Qemu, Qmp, DEVICE_ID};
use gvt_vmtests::Mdev;
use serde_json::json;

/// Both QEMUs: the device may migrate (QEMU finds no dirty tracking on the
/// mdev's type1 container and would otherwise block the migration).
const DEV_OPTS: &str = ",enable-migration=on";

#[test]
#[ignore = "runs inside the VM rig"]
fn migration_of_a_guest_whose_fbcon_is_on_the_vgpu() {
    load();
    let m1 = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU 1");
    let m2 = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU 2");
    let (a1, a2) = (attrs(&m1), attrs(&m2));
    assert_ne!(a1.ap_base, a2.ap_base, "vGPU 2 has another aperture slice");
    assert_ne!(a1.high_base, a2.high_base, "vGPU 2 has another high slice");
    let pid = std::process::id();
    let sock = |n: &str| format!("/tmp/gvt-mdrm-{n}-{pid}.sock");

    // A: L2 boots, gvt_drm binds vGPU 1, fbcon draws the banner.
    let mut qa = Qemu::spawn(&command(&m1, "", &sock("qmp-a"), &sock("tty-a"), DEV_OPTS));
    let mut qa_qmp = Qmp::new(&sock("qmp-a"));
    let _qa_tty = connect(&sock("tty-a"));
    let card = qa.wait_for("L2: drm card0", BOOT);
    assert!(
        card.contains("driver gvt_drm"),
        "gvt_drm binds vGPU 1: {card}"
    );
    qa.wait_for("L2: drm banner", STEP);
    let shot_a = format!("/tmp/gvt-mdrm-a-{pid}.ppm");
    let before = wait_screen(&mut qa_qmp, &shot_a, 30, Duration::from_secs(2), |s| {
        check_banner(s).map(|_| s.clone())
    })
    .unwrap_or_else(|e| panic!("the banner is not on A's screen: {e}"));
    // fbcon is idle now (cursor off): the screen A shows is what moves.
    let before = {
        let again = qa_qmp.screendump(DEVICE_ID, &shot_a);
        assert!(again == before, "A's screen is still while nothing draws");
        again
    };

    // B: the same machine on vGPU 2, waiting for A.
    let mig = sock("mig");
    let _ = fs::remove_file(&mig);
    let mut args = command(&m2, "", &sock("qmp-b"), &sock("tty-b"), DEV_OPTS);
    args.extend(["-incoming".to_string(), format!("unix:{mig}")]);
    let qb = Qemu::spawn(&args);
    let mut qb_qmp = Qmp::new(&sock("qmp-b"));
    let qb_tty = connect(&sock("tty-b"));
    let t0 = Instant::now();
    while !std::path::Path::new(&mig).exists() {
        assert!(t0.elapsed() < STEP, "B never listened on {mig}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Move the running guest.
    let (status, info) = qa_qmp.migrate(&format!("unix:{mig}"), STEP);
    assert_eq!(status, "completed", "migration failed: {info}");
    qb_qmp.wait_running(STEP);
    // A lets go first (vGPU 1 is reset, its pages leave the GGTT): what B
    // shows can only come through vGPU 2.
    qa_qmp.cmd(json!({"execute": "quit"}));
    let st = qa.child.wait().expect("QEMU A exit");
    assert!(st.success(), "QEMU A exit status {st}");

    // 1. The screen moved: B shows exactly what A showed.
    let shot_b = format!("/tmp/gvt-mdrm-b-{pid}.ppm");
    let after = qb_qmp.screendump(DEVICE_ID, &shot_b);
    assert!(after == before, "B's screendump equals A's");
    println!(
        "migrated: B's screendump equals A's ({}x{}); QEMU downtime {} ms, total {} ms",
        after.width,
        after.height,
        info.get("downtime").and_then(|v| v.as_u64()).unwrap_or(0),
        info.get("total-time").and_then(|v| v.as_u64()).unwrap_or(0)
    );

    // 2. The guest's console keeps drawing on B.
    let mut l2 = L2Drm {
        q: qb,
        qmp: qb_qmp,
        tty: qb_tty,
        pid,
    };
    writeln!(l2.tty, "\nconsole").unwrap();
    l2.q.wait_for("L2: drm console shown", STEP);
    let session = wait_screen(&mut l2.qmp, &shot_b, 30, Duration::from_secs(2), |s| {
        check_banner(s)?;
        // The session is printed from row 7 (y 96..) on: that band changed.
        let row = (3 * s.width * 16) as usize;
        if s.rgb[7 * row..] == before.rgb[7 * row..] {
            return Err("nothing new below the banner yet".into());
        }
        Ok(s.clone())
    })
    .unwrap_or_else(|e| panic!("fbcon does not draw on B: {e}"));
    let changed = session
        .rgb
        .chunks(3)
        .zip(before.rgb.chunks(3))
        .filter(|(a, b)| a != b)
        .count();
    println!("fbcon on B: the banner stays, the console session changed {changed} pixels");

    // 3. A KMS commit with vblank interrupts on B: modetest's bars.
    writeln!(l2.tty, "modetest").unwrap();
    l2.q.wait_for("L2: drm modetest started", STEP);
    wait_screen(
        &mut l2.qmp,
        &shot_b,
        30,
        Duration::from_secs(2),
        check_smpte,
    )
    .unwrap_or_else(|e| panic!("modetest's pattern is not on B's screen: {e}"));
    println!("modetest on B: the top 6/9 of the screen equal its SMPTE bars, pixel for pixel");
    writeln!(l2.tty, "done").unwrap();
    let exit = l2.q.wait_for("L2: drm modetest exit", STEP);
    let log = l2.q.log.join("\n");
    assert!(exit.contains("exit 0"), "modetest on B failed:\n{log}");
    assert!(
        !log.contains("vblank wait timed out") && !log.contains("flip_done timed out"),
        "a commit on B waited for a vblank that never came:\n{log}"
    );
    // Splats, refusals; removes vGPU 2.
    l2.finish(m2);

    // vGPU 1 is idle and reusable, with its own slices.
    gvt_vmtests::gvt::assert_reusable_with_own_slice(&m1, a1.ap_base);
    m1.remove().expect("remove vGPU 1");
}
