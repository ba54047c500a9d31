//! The native guest driver in a nested QEMU (shared by the `gvt_drm` tests
//! and the demo): boot the L2 DRM kernel with a vGPU (`display=on`),
//! `gvt_drm.ko` loaded by the L2 program tools/vm/l2-drm, which draws a
//! banner on fbcon (tty1) and then takes commands on its second serial
//! port; and the screendump check of that banner.

use std::fs;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::guest::stats;
use crate::screen::{connect, Ppm, Qemu, Qmp, DEVICE_ID};
use crate::{Mdev, L2_DIR};

pub const BANNER: &str = "GVT-RS GVT-RS";
pub const ROW: u32 = 5;
pub const COL: u32 = 10;
/// Deadlines (not timed assertions): L2 boots the DRM kernel under TCG
/// inside the rig's TCG guest, which takes minutes on a loaded host.
pub const BOOT: Duration = Duration::from_secs(900);
pub const STEP: Duration = Duration::from_secs(300);

fn is_yellow(p: [u8; 3]) -> bool {
    p[0] > 200 && p[1] > 200 && p[2] < 120
}

fn is_blue(p: [u8; 3]) -> bool {
    p[0] < 40 && p[1] < 40 && p[2] > 130
}

pub fn px(s: &Ppm, x: u32, y: u32) -> [u8; 3] {
    let i = 3 * (y * s.width + x) as usize;
    [s.rgb[i], s.rgb[i + 1], s.rgb[i + 2]]
}

/// Check the banner in the screendump; returns the cell size found.
pub fn check_banner(s: &Ppm) -> Result<(u32, u32), String> {
    // The bounding box of everything in the banner's colours.
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    let mut n = 0u64;
    for y in 0..s.height {
        for x in 0..s.width {
            let p = px(s, x, y);
            if is_yellow(p) || is_blue(p) {
                n += 1;
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x + 1);
                y1 = y1.max(y + 1);
            }
        }
    }
    if n == 0 {
        return Err("no banner-coloured pixel on the screen".into());
    }
    let len = BANNER.len() as u32;
    let (w, h) = (x1 - x0, y1 - y0);
    if w % len != 0 {
        return Err(format!(
            "banner box {w}x{h} at ({x0},{y0}) is not {len} cells wide"
        ));
    }
    let (cw, ch) = (w / len, h);
    if (cw, ch) != (8, 16) && (cw, ch) != (8, 8) {
        return Err(format!("character cell {cw}x{ch}: not a console font"));
    }
    if (x0, y0) != ((COL - 1) * cw, (ROW - 1) * ch) {
        return Err(format!(
            "banner at ({x0},{y0}), fbcon puts row {ROW} column {COL} at ({},{})",
            (COL - 1) * cw,
            (ROW - 1) * ch
        ));
    }
    if u64::from(w * h) != n {
        return Err(format!(
            "{n} banner-coloured pixels in a {w}x{h} box: the cells are not solid"
        ));
    }
    // Per cell: the glyph (yellow pixels) as a bitmap.
    let cells: Vec<Vec<bool>> = (0..len)
        .map(|c| {
            (0..ch)
                .flat_map(|y| (0..cw).map(move |x| (x0 + c * cw + x, y0 + y)))
                .map(|(x, y)| is_yellow(px(s, x, y)))
                .collect()
        })
        .collect();
    let chars: Vec<char> = BANNER.chars().collect();
    for (i, a) in chars.iter().enumerate() {
        let ink = cells[i].iter().filter(|b| **b).count();
        if (*a == ' ') != (ink == 0) {
            return Err(format!("cell {i} ('{a}') has {ink} glyph pixels"));
        }
        for (j, b) in chars.iter().enumerate() {
            if (a == b) != (cells[i] == cells[j]) {
                return Err(format!(
                    "cells {i} ('{a}') and {j} ('{b}'): glyphs {}",
                    if a == b { "differ" } else { "equal" }
                ));
            }
        }
    }
    Ok((cw, ch))
}

/// Boot the L2 DRM kernel with vGPU `m` (`display=on`), the driver loaded
/// with `params` (`a=1,b=2`), up to the banner on fbcon; checks what L2
/// reports of the driver.  QEMU's output is printed as it arrives.
pub fn boot(m: &Mdev, params: &str) -> L2Drm {
    boot_with(m, params, true)
}

/// [`boot`], QEMU's output printed (`echo`) or only kept in the log.
pub fn boot_with(m: &Mdev, params: &str, echo: bool) -> L2Drm {
    boot_initrd(m, params, echo, None)
}

/// [`boot_with`], L2 booting `initrd` instead of the rig's `initrd.gz`
/// (with 512 MiB of RAM instead of 128).
pub fn boot_initrd(m: &Mdev, params: &str, echo: bool, initrd: Option<&str>) -> L2Drm {
    let pid = std::process::id();
    // Several L2 guests may run at once (bench_native_blitter): sockets of
    // their own.
    static BOOTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = BOOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (qmp_path, tty_path) = (
        format!("/tmp/gvt-drm-qmp-{pid}-{n}.sock"),
        format!("/tmp/gvt-drm-tty-{pid}-{n}.sock"),
    );
    let mut args = command(m, params, &qmp_path, &tty_path, "");
    if let Some(i) = initrd {
        for a in args.iter_mut() {
            if *a == format!("{L2_DIR}/initrd.gz") {
                *a = i.to_string();
            } else if *a == "128M" {
                // The bigger initramfs unpacks into L2's RAM (weston's
                // segment: 128 MiB gave "Initramfs unpacking failed:
                // write error"), and its programs run there.
                *a = "512M".into();
            }
        }
    }
    let mut q = Qemu::spawn(&args);
    q.echo = echo;
    let qmp = Qmp::new(&qmp_path);
    let tty = connect(&tty_path);
    up(&mut q, m);
    L2Drm { q, qmp, tty, pid }
}

/// Wait for L2 (just started, or rebooted) to load the driver and draw
/// its banner on fbcon; check what it reports of the driver (PCI binding,
/// the connector connected with the monitor's 1024x768 mode first, fbcon
/// on the fbdev emulation at that mode) and the plane the host shows.
pub fn up(q: &mut Qemu, m: &Mdev) {
    let card = q.wait_for("L2: drm card0", BOOT);
    let from = q.log.len() - 1;
    assert!(
        card.contains("0x1234 0x6776 driver gvt_drm"),
        "gvt_drm binds the vGPU: {card}"
    );
    q.wait_for("L2: drm banner", STEP);
    let log = q.log[from..].join("\n");
    assert!(
        log.contains("L2: drm connector card0-Virtual-1 connected modes 1024x768"),
        "the connector is connected with the monitor's EDID mode first:\n{log}"
    );
    assert!(
        log.contains(
            "L2: drm fb0: gvt_drmdrmfb frame buffer device; Console: switching to colour frame buffer device 128x48"
        ),
        "fbdev emulation, fbcon at the monitor's mode (1024x768 in 8x16 cells):\n{log}"
    );
    let d = fs::read_to_string(m.sysfs_path().join("gvt/display")).unwrap();
    println!("gvt/display:\n{d}");
    assert!(d.contains("plane: 1024x768 XR24 stride 4096"), "{d}");
}

/// The nested QEMU command line of an L2 DRM guest on vGPU `m`
/// (`display=on`, plus `dev_opts` on the `vfio-pci` device), gvt_drm
/// loaded with `params`, its QMP and command port on the given sockets.
pub fn command(m: &Mdev, params: &str, qmp: &str, tty: &str, dev_opts: &str) -> Vec<String> {
    let kernel = format!("{L2_DIR}/bzImage-drm");
    assert!(
        std::path::Path::new(&kernel).exists(),
        "the rig packs the L2 DRM kernel as {kernel}"
    );
    fs::write(m.sysfs_path().join("gvt/dmabuf"), "0").expect("gvt/dmabuf");
    let mut args = crate::l2_qemu_command_accel("tcg", "drm");
    for a in args.iter_mut() {
        if *a == format!("{L2_DIR}/bzImage") {
            a.clone_from(&kernel);
        }
        if a.contains("gvt.l2=drm") && !params.is_empty() {
            a.push_str(&format!(" gvt.drm={params}"));
        }
    }
    let dev = format!(
        "vfio-pci,id={DEVICE_ID},sysfsdev={},display=on{dev_opts}",
        m.sysfs_path().display()
    );
    args.extend(
        [
            "-device",
            &dev,
            "-qmp",
            &format!("unix:{qmp},server=on,wait=off"),
            "-serial",
            &format!("unix:{tty},server=on,wait=off"),
        ]
        .map(String::from),
    );
    args
}

/// Screendumps of `qmp` into `shot`, `tries` times `pause` apart, until
/// `check` accepts one (fbcon, modetest and weston draw asynchronously and
/// the screen is read at screendump time): what it returned, or its last
/// error.
pub fn wait_screen<T>(
    qmp: &mut Qmp,
    shot: &str,
    tries: u32,
    pause: Duration,
    mut check: impl FnMut(&Ppm) -> Result<T, String>,
) -> Result<T, String> {
    let mut last = String::from("no screendump taken");
    for i in 0..tries {
        if i > 0 {
            std::thread::sleep(pause);
        }
        match check(&qmp.screendump(DEVICE_ID, shot)) {
            Ok(v) => return Ok(v),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// libdrm's SMPTE test pattern (util/pattern.c, RGB formats): the top 6/9
/// of the screen are seven 75% bars, bar `x * 7 / width` at column `x`.
pub const SMPTE_TOP: [[u8; 3]; 7] = [
    [192, 192, 192],
    [192, 192, 0],
    [0, 192, 192],
    [0, 192, 0],
    [192, 0, 192],
    [192, 0, 0],
    [0, 0, 192],
];

/// Compare the screendump's pixels at `points` (x, y, wanted colour):
/// `Err` says how many differ and the first, in `what`'s words.
pub fn compare(
    s: &Ppm,
    points: impl Iterator<Item = (u32, u32, [u8; 3])>,
    what: &str,
) -> Result<(), String> {
    let mut bad = 0u64;
    let mut first = None;
    for (x, y, want) in points {
        if px(s, x, y) != want {
            bad += 1;
            first.get_or_insert((x, y, px(s, x, y), want));
        }
    }
    match first {
        None => Ok(()),
        Some((x, y, got, want)) => Err(format!(
            "{bad} pixels of {what} differ; first at ({x},{y}): {got:?}, want {want:?}"
        )),
    }
}

/// Check the screendump's top 6/9 against modetest's pattern, exactly.
pub fn check_smpte(s: &Ppm) -> Result<(), String> {
    let (w, h) = (s.width, s.height);
    let points =
        (0..h * 6 / 9).flat_map(|y| (0..w).map(move |x| (x, y, SMPTE_TOP[(x * 7 / w) as usize])));
    compare(s, points, "modetest's bars")
}

/// A running L2 DRM guest.
pub struct L2Drm {
    pub q: Qemu,
    pub qmp: Qmp,
    pub tty: UnixStream,
    pub pid: u32,
}

impl L2Drm {
    /// Let L2 finish; check its log and the mediator's refusal counters;
    /// remove the vGPU.
    pub fn finish(self, m: Mdev) {
        self.finish_refused(m, 0)
    }

    /// [`L2Drm::finish`] for a test that made the guest submit `refused`
    /// commands the auditor must refuse: exactly that many audit
    /// refusals (`submissions_rejected`, the `reject_*` classes), nothing
    /// else refused.
    pub fn finish_refused(self, m: Mdev, refused: u64) {
        let L2Drm { mut q, .. } = self;
        q.wait_for("L2: done", STEP);
        let st = q.child.wait().expect("qemu exit");
        let log = q.log.join("\n");
        assert!(st.success(), "QEMU exit status {st}:\n{log}");
        for bad in ["WARNING:", "BUG:", "Oops", "Call Trace"] {
            assert!(!log.contains(bad), "L2 kernel splat ({bad}):\n{log}");
        }
        let st = stats(&m);
        let got = crate::guest::refusals(&st);
        let audit: u64 = got
            .iter()
            .filter(|(k, _)| k.starts_with("reject_"))
            .map(|(_, v)| v)
            .sum();
        assert!(
            audit == refused
                && st.get("submissions_rejected") == Some(&refused)
                && got.iter().all(|(k, _)| k.starts_with("reject_")),
            "the mediator refused (expected {refused} audit refusals): {got:?}"
        );
        println!(
            "gvt/stats: ggtt_mapped {:?}, audit refusals {refused} (as expected), mmio_rejected 0, ggtt_rejected 0, ggtt_dropped 0",
            st.get("ggtt_mapped")
        );
        m.remove().expect("remove");
    }
}
