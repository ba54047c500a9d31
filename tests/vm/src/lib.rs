//! Helpers shared by the tests that run inside the VM rig's guest (L1).
//!
//! The rig boots the stock Debian kernel under QEMU TCG with an initramfs that
//! holds these statically linked test binaries, the project's modules, VFIO,
//! mdev and (for nested tests) an unmodified QEMU 10 plus a small L2 kernel.
//! Every test here is `#[ignore]`d on the host (there is no mdev parent there)
//! and run by the rig with `--ignored`.

pub mod drm;
pub mod edid;
pub mod guest;
pub mod gvt;
pub mod igt;
pub mod l2;
pub mod pci;
pub mod screen;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the rig puts the L2 kernel, its initramfs and QEMU's firmware.
pub const L2_DIR: &str = "/l2";

/// Mark the running test as skipped, with why: the rig (tools/vm-run.sh)
/// counts a test that prints this and then passes as skipped, shows the
/// reason, and leaves it out of "passed".  Return from the test right after.
pub fn skip(reason: &str) {
    println!("GVT-RIG: skip: {reason}");
}

/// The fds process `pid` holds whose `/proc/PID/fd` link names what `want`
/// accepts (`/dmabuf:`, `anon_inode:[vfio-device]`, ...), duplicated into
/// this process with `pidfd_getfd(2)` (root may): the very objects it
/// holds, not copies.  An fd closed meanwhile is skipped.
pub fn grab_fds(pid: u32, want: impl Fn(&str) -> bool) -> Vec<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain syscall; the result is checked.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) } as i32;
    assert!(
        pidfd >= 0,
        "pidfd_open({pid}): {}",
        io::Error::last_os_error()
    );
    // SAFETY: a fresh fd this function owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let mut out = Vec::new();
    for e in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let Ok(target) = fs::read_link(e.path()) else {
            continue;
        };
        let Some(n) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if !want(&target.to_string_lossy()) {
            continue;
        }
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), n, 0) } as i32;
        if fd >= 0 {
            // SAFETY: a fresh fd this function owns.
            out.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    out
}

/// A fresh random (v4) UUID from the kernel.
pub fn new_uuid() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("kernel uuid")
        .trim()
        .to_string()
}

/// The mdev parent whose `/sys/class/mdev_bus/<parent>` entry exists.
pub fn parent_dir(parent: &str) -> PathBuf {
    Path::new("/sys/class/mdev_bus").join(parent)
}

/// Type directories a parent offers (full names, e.g. `mtty-2`).
pub fn types_of(parent: &str) -> Vec<String> {
    let dir = parent_dir(parent).join("mdev_supported_types");
    let mut v: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// An mdev instance, removed again when dropped.
pub struct Mdev {
    pub uuid: String,
    removed: bool,
}

impl Mdev {
    /// `echo $uuid > /sys/class/mdev_bus/<parent>/mdev_supported_types/<ty>/create`
    pub fn create(parent: &str, ty: &str) -> io::Result<Mdev> {
        Self::create_with_uuid(parent, ty, &new_uuid())
    }

    pub fn create_with_uuid(parent: &str, ty: &str, uuid: &str) -> io::Result<Mdev> {
        let create = parent_dir(parent)
            .join("mdev_supported_types")
            .join(ty)
            .join("create");
        fs::write(&create, uuid)?;
        Ok(Mdev {
            uuid: uuid.to_string(),
            removed: false,
        })
    }

    /// An mdev another process created: not removed when dropped.
    pub fn existing(uuid: &str) -> Mdev {
        Mdev {
            uuid: uuid.to_string(),
            removed: true,
        }
    }

    /// `/sys/bus/mdev/devices/<uuid>`
    pub fn sysfs_path(&self) -> PathBuf {
        Path::new("/sys/bus/mdev/devices").join(&self.uuid)
    }

    /// `echo 1 > /sys/bus/mdev/devices/<uuid>/remove`
    pub fn remove(mut self) -> io::Result<()> {
        self.removed = true;
        fs::write(self.sysfs_path().join("remove"), "1")
    }
}

impl Drop for Mdev {
    fn drop(&mut self) {
        if !self.removed {
            let _ = fs::write(self.sysfs_path().join("remove"), "1");
        }
    }
}

/// Output of a command run with a deadline.
pub struct Ran {
    pub status: Option<i32>,
    pub output: String,
    pub elapsed: Duration,
}

/// Run `cmd` with its stdout+stderr captured, killing it after `limit`.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Ran {
    let t0 = Instant::now();
    let out_path = format!(
        "/tmp/run-{}.log",
        std::process::id() as u64 * 1000 + t0.elapsed().as_nanos() as u64 % 1000
    );
    let out = fs::File::create(&out_path).expect("log file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s.code();
        }
        if t0.elapsed() > limit {
            // Before killing it: where is each of its threads in the kernel?
            // (A hang in a driver shows up here.)
            let mut diag = String::from("\n---- kernel stacks of the timed-out process ----\n");
            if let Ok(tasks) = fs::read_dir(format!("/proc/{}/task", child.id())) {
                for t in tasks.flatten() {
                    let comm = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                    let stack = fs::read_to_string(t.path().join("stack")).unwrap_or_default();
                    diag.push_str(&format!("task {:?} {}{}\n", t.file_name(), comm, stack));
                }
            }
            let _ = fs::OpenOptions::new()
                .append(true)
                .open(&out_path)
                .and_then(|mut f| {
                    use std::io::Write;
                    f.write_all(diag.as_bytes())
                });
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = fs::read_to_string(&out_path).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    Ran {
        status,
        output,
        elapsed: t0.elapsed(),
    }
}

/// How the nested (L2) QEMU runs: `-accel kvm` when the rig loaded kvm-amd
/// (TCG's emulated SVM), TCG inside TCG otherwise.
pub fn nested_accel() -> &'static str {
    if Path::new("/dev/kvm").exists() {
        "kvm"
    } else {
        "tcg"
    }
}

/// The command line (program first) that boots the rig's L2 kernel in an
/// unmodified QEMU 10, without devices; `l2_cmd` is passed as `gvt.l2=`.
pub fn l2_qemu_command(l2_cmd: &str) -> Vec<String> {
    l2_qemu_command_accel(nested_accel(), l2_cmd)
}

/// [`l2_qemu_command`] with an explicit accelerator.
pub fn l2_qemu_command_accel(accel: &str, l2_cmd: &str) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "qemu-system-x86_64".into(),
        "-L".into(),
        format!("{L2_DIR}/fw"),
    ];
    for a in [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-m",
        "128M",
    ] {
        v.push(a.into());
    }
    v.extend([
        "-accel".into(),
        accel.into(),
        "-cpu".into(),
        if accel == "kvm" {
            "host,-xsave"
        } else {
            "qemu64"
        }
        .into(),
    ]);
    v.extend([
        "-kernel".into(),
        format!("{L2_DIR}/bzImage"),
        "-initrd".into(),
        format!("{L2_DIR}/initrd.gz"),
    ]);
    // no_timer_check: under TCG on a loaded host the L2 kernel's boot-time
    // IO-APIC timer check can miss its window and panic ("IO-APIC + timer
    // doesn't work"); virtual machines routinely skip it.
    v.extend([
        "-append".into(),
        format!("console=ttyS0 panic=-1 noxsave no_timer_check gvt.l2={l2_cmd}"),
    ]);
    v
}

/// Boot the rig's L2 kernel in an unmodified QEMU 10 with `extra` devices,
/// and return its serial console output.  The L2 initramfs's `/init` prints
/// `L2: ...` lines and powers off; `l2_cmd` is passed as `gvt.l2=` on its
/// kernel command line.
pub fn run_l2(extra: &[&str], l2_cmd: &str, limit: Duration) -> Ran {
    run_l2_accel(nested_accel(), extra, l2_cmd, limit)
}

/// [`run_l2`] with an explicit accelerator: `"kvm"` (QEMU attaches the KVM
/// fd to every VFIO group it opens) or `"tcg"` (no KVM anywhere).
pub fn run_l2_accel(accel: &str, extra: &[&str], l2_cmd: &str, limit: Duration) -> Ran {
    let q = l2_qemu_command_accel(accel, l2_cmd);
    // Under KVM an L2 run takes 5-15 s; the callers' limits allow for TCG.
    let limit = if accel == "kvm" {
        limit.min(Duration::from_secs(90))
    } else {
        limit
    };
    let r = run_l2_once(&q, extra, limit);
    if r.status.is_some() || l2_booted(&r.output) {
        // It finished, or its kernel started and then hung: a hang is a
        // failure (the caller asserts the exit status), never retried.
        return r;
    }
    // Nested virtualization here is KVM on TCG's emulated SVM: an L2 whose
    // kernel never printed its first line is retried once.  The rig counts
    // and reports every such retry (tools/vm-run.sh: `GVT-RIG: nested-retry`),
    // with the evidence (QEMU's output, the kernel stacks of its threads).
    eprintln!("{}\n{}", nested_retry_marker(accel, limit), r.output);
    run_l2_once(&q, extra, limit)
}

/// Whether an L2 console shows that the L2 kernel started (its first line,
/// `Linux version ...`, comes before anything else the L2 prints).
pub fn l2_booted(output: &str) -> bool {
    output.contains("Linux version")
}

/// The line the rig counts (and reports) for a nested QEMU whose L2 never
/// booted within `limit` and that is retried.
pub fn nested_retry_marker(accel: &str, limit: Duration) -> String {
    format!(
        "GVT-RIG: nested-retry: QEMU -accel {accel}: the L2 kernel never started in {} s (no 'Linux version' on its console); retrying once",
        limit.as_secs()
    )
}

fn run_l2_once(q: &[String], extra: &[&str], limit: Duration) -> Ran {
    let accel = q
        .iter()
        .skip_while(|a| *a != "-accel")
        .nth(1)
        .cloned()
        .unwrap_or_default();
    let mut c = Command::new(&q[0]);
    c.args(&q[1..]).args(extra);
    let r = run_with_timeout(&mut c, limit);
    eprintln!(
        "nested QEMU ({accel}) ran {:.1} s, exit {:?}",
        r.elapsed.as_secs_f64(),
        r.status
    );
    r
}

/// Load `/lib/modules/<name>.ko` (with `params`) unless it is loaded already.
pub fn ensure_module(name: &str, params: &[&str]) {
    if Path::new("/sys/module")
        .join(name.replace('-', "_"))
        .exists()
    {
        return;
    }
    let st = Command::new("insmod")
        .arg(format!("/lib/modules/{name}.ko"))
        .args(params)
        .status()
        .expect("run insmod");
    assert!(st.success(), "insmod {name} failed: {st}");
}

/// The test pattern of the display tests at pixel (x, y) of surface `seed`
/// (XRGB8888, alpha byte set): the L2 display program draws it, the L1 test
/// checks QEMU's screendump against it.
pub fn display_pixel(seed: u32, x: u32, y: u32) -> u32 {
    (seed.wrapping_mul(0x9E37_79B1) ^ (y << 12) ^ x ^ 0x5A00_0000) | 0xFF00_0000
}

/// One drawing step of the display test picture ([`frame_blits`]), in
/// pixels of a 32 bpp surface.  The L2 display program turns each into one
/// blitter command (`Fill` → XY_COLOR_BLT, `Copy` → XY_SRC_COPY_BLT within
/// the same surface) executed in list order; [`expected_frame`] paints the
/// same list with the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blit {
    /// Fill `[x, x + w) × [y, y + h)` with `color` (XRGB8888, alpha byte set).
    Fill {
        x: u32,
        y: u32,
        w: u32,
        h: u32,
        color: u32,
    },
    /// Copy the `w × h` rectangle at `(sx, sy)` to `(x, y)`.  Source and
    /// destination never overlap, so the result does not depend on the
    /// direction a blitter copies in.
    Copy {
        sx: u32,
        sy: u32,
        x: u32,
        y: u32,
        w: u32,
        h: u32,
    },
}

/// Smallest surface [`frame_blits`] draws on.
pub const FRAME_MIN: (u32, u32) = (64, 48);

/// The eight colour bars (white, yellow, cyan, green, magenta, red, blue, black).
const BARS: [u32; 8] = [
    0xFFFF_FFFF,
    0xFFFF_FF00,
    0xFF00_FFFF,
    0xFF00_FF00,
    0xFFFF_00FF,
    0xFFFF_0000,
    0xFF00_00FF,
    0xFF00_0000,
];

/// Checkerboard cell size (pixels) of frame `frame`: 16 for frame 1, 32 for 2.
pub fn checker_cell(frame: u32) -> u32 {
    8 << (frame % 3).max(1)
}

/// The rows `[top, bottom)` the checkerboard of a `h`-line frame occupies.
pub fn checker_band(h: u32) -> (u32, u32) {
    (h / 3, 2 * h / 3)
}

/// The display test picture number `frame` (1, 2, …: every frame differs)
/// of a `w × h` surface as a list of rectangle fills and copies, in drawing
/// order.  Text-free: a background, a one-pixel border, eight colour bars
/// (rotated by `frame`) in the top third, a checkerboard in the middle third
/// (one 2×2-cell tile from fills, widened and then heightened by doubling
/// copies), and in the bottom third a 16-step grey ramp, four overlapping
/// rectangles at `frame`-dependent places, a copy of part of the bars, and
/// `frame` small squares in the bottom right corner.
///
/// The L2 display program draws exactly this list with the blitter; the L1
/// tests compute the expected pixels from it with [`expected_frame`].
/// Panics if the surface is smaller than [`FRAME_MIN`].
pub fn frame_blits(frame: u32, w: u32, h: u32) -> Vec<Blit> {
    assert!(
        w >= FRAME_MIN.0 && h >= FRAME_MIN.1,
        "a {w}x{h} surface is too small for the test picture"
    );
    let mut v = Vec::new();
    let fill = |v: &mut Vec<Blit>, x: u32, y: u32, w: u32, h: u32, color: u32| {
        if w > 0 && h > 0 {
            v.push(Blit::Fill { x, y, w, h, color });
        }
    };
    // Background.
    let bg = 0xFF10_1820 ^ (frame.wrapping_mul(0x0003_0507) & 0x000F_0F0F);
    fill(&mut v, 0, 0, w, h, bg);
    // Colour bars in the top third.
    let (top, bottom) = checker_band(h);
    for i in 0..8 {
        let (x0, x1) = (w * i / 8, w * (i + 1) / 8);
        fill(
            &mut v,
            x0,
            0,
            x1 - x0,
            top,
            BARS[((i + frame) % 8) as usize],
        );
    }
    // Checkerboard: one tile of 2x2 cells, then doubling copies across and down.
    let c = checker_cell(frame);
    let (ca, cb) = (
        0xFF30_3030 | ((frame & 1) * 0x00C0_0000),
        0xFFD0_D0D0 ^ ((frame & 2) * 0x0000_0060),
    );
    let tile = (2 * c).min(w).min(bottom - top);
    fill(&mut v, 0, top, tile, tile, ca);
    fill(&mut v, c, top, tile.saturating_sub(c), c.min(tile), cb);
    fill(&mut v, 0, top + c, c.min(tile), tile.saturating_sub(c), cb);
    let mut done = tile;
    while done < w {
        let n = done.min(w - done);
        v.push(Blit::Copy {
            sx: 0,
            sy: top,
            x: done,
            y: top,
            w: n,
            h: tile,
        });
        done += n;
    }
    let mut done = tile;
    while done < bottom - top {
        let n = done.min(bottom - top - done);
        v.push(Blit::Copy {
            sx: 0,
            sy: top,
            x: 0,
            y: top + done,
            w,
            h: n,
        });
        done += n;
    }
    // Grey ramp in the upper half of the bottom third.
    let band = h - bottom;
    for i in 0..16 {
        let (x0, x1) = (w * i / 16, w * (i + 1) / 16);
        fill(
            &mut v,
            x0,
            bottom,
            x1 - x0,
            band / 2,
            0xFF00_0000 | ((i * 0x11) * 0x0001_0101),
        );
    }
    // Overlapping rectangles at places that depend on the frame.
    let mut s = frame.wrapping_mul(0x9E37_79B1) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    };
    let (rw, rh) = (w / 6, band / 3);
    let y0 = bottom + band / 2;
    for _ in 0..4 {
        let x = next() % (w - rw);
        let y = y0 + next() % (h - y0 - rh).max(1);
        fill(&mut v, x, y, rw, rh, 0xFF00_0000 | (next() & 0x00FF_FFFF));
    }
    // A piece of the bars, copied into the bottom third.
    let (pw, ph) = (w / 4, (band / 3).min(top));
    v.push(Blit::Copy {
        sx: w / 16,
        sy: 0,
        x: w / 2,
        y: h - ph - 2,
        w: pw,
        h: ph,
    });
    // One square per frame number in the bottom right corner.
    let q = (band / 8).max(2);
    for i in 0..frame.min(8) {
        fill(&mut v, w - (i + 1) * 2 * q, h - 2 * q, q, q, 0xFFFF_FFFF);
    }
    // A one-pixel border: the edges must be exact.
    let edge = 0xFFFF_8000 ^ (frame << 4);
    fill(&mut v, 0, 0, w, 1, edge);
    fill(&mut v, 0, h - 1, w, 1, edge);
    fill(&mut v, 0, 0, 1, h, edge);
    fill(&mut v, w - 1, 0, 1, h, edge);
    v
}

/// The pixels (row-major, `w * h`, XRGB8888) of picture `frame` of a
/// `w × h` surface: [`frame_blits`] painted with the CPU, in order, on a
/// surface of zeros.  What QEMU's screendump of the L2 display program's
/// screen must equal exactly.
pub fn expected_frame(frame: u32, w: u32, h: u32) -> Vec<u32> {
    paint(&frame_blits(frame, w, h), w, h)
}

/// Paint `blits` on a `w × h` surface of zeros with the CPU (panics on a
/// rectangle outside the surface).
pub fn paint(blits: &[Blit], w: u32, h: u32) -> Vec<u32> {
    let (w, h) = (w as usize, h as usize);
    let mut px = vec![0u32; w * h];
    let inside = |x: u32, y: u32, bw: u32, bh: u32| {
        (x as usize + bw as usize) <= w && (y as usize + bh as usize) <= h
    };
    for b in blits {
        match *b {
            Blit::Fill {
                x,
                y,
                w: bw,
                h: bh,
                color,
            } => {
                assert!(inside(x, y, bw, bh), "{b:?} outside {w}x{h}");
                for row in y as usize..(y + bh) as usize {
                    px[row * w + x as usize..row * w + (x + bw) as usize].fill(color);
                }
            }
            Blit::Copy {
                sx,
                sy,
                x,
                y,
                w: bw,
                h: bh,
            } => {
                assert!(
                    inside(x, y, bw, bh) && inside(sx, sy, bw, bh),
                    "{b:?} outside {w}x{h}"
                );
                for row in 0..bh as usize {
                    let s = (sy as usize + row) * w + sx as usize;
                    let d = (y as usize + row) * w + x as usize;
                    px.copy_within(s..s + bw as usize, d);
                }
            }
        }
    }
    px
}

/// Where the rig installs cloud-hypervisor in L1 (tools/vm-image.sh, from
/// the static build of tools/build-cloud-hypervisor.sh).
pub const CLOUD_HYPERVISOR: &str = "/usr/bin/cloud-hypervisor";

/// What `gvtctl vmm-args UUID --vmm cloud-hypervisor` prints, split into
/// arguments: the VFIO device arguments the cloud-hypervisor tests run with.
pub fn ch_vmm_args(uuid: &str) -> Vec<String> {
    let o = Command::new("/usr/bin/gvtctl")
        .args(["vmm-args", uuid, "--vmm", "cloud-hypervisor"])
        .output()
        .expect("run /usr/bin/gvtctl");
    assert!(
        o.status.success(),
        "gvtctl vmm-args {uuid} --vmm cloud-hypervisor: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// The command line (program first) that boots the rig's L2 kernel in
/// cloud-hypervisor with KVM (direct kernel boot of the bzImage, serial on
/// stdout), without devices; `l2_cmd` is passed as `gvt.l2=`.  `noxsave`:
/// cloud-hypervisor passes the host's CPUID with XSAVE, on which the L2
/// kernel faults in xstate init here (KVM on TCG's emulated SVM).
pub fn l2_ch_command(l2_cmd: &str) -> Vec<String> {
    [
        CLOUD_HYPERVISOR,
        "--kernel",
        &format!("{L2_DIR}/bzImage"),
        "--initramfs",
        &format!("{L2_DIR}/initrd.gz"),
        "--cmdline",
        &format!("console=ttyS0 panic=-1 noxsave no_timer_check gvt.l2={l2_cmd}"),
        "--cpus",
        "boot=1",
        "--memory",
        "size=128M",
        "--serial",
        "tty",
        "--console",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A cloud-hypervisor process started by [`ChVm::start`]; its stdout and
/// stderr (the L2 serial console) go to a file read back by [`ChVm::output`].
/// Dropping it ends the process.
pub struct ChVm {
    child: std::process::Child,
    log: String,
    pub started: Instant,
}

impl ChVm {
    /// Start `cmd` (program first) with `extra` arguments appended.
    pub fn start(cmd: &[String], extra: &[String]) -> ChVm {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = format!("/tmp/ch-{}-{n}.log", std::process::id());
        let out = fs::File::create(&log).expect("log file");
        eprintln!("starting {} {}", cmd.join(" "), extra.join(" "));
        let child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", cmd[0]));
        ChVm {
            child,
            log,
            started: Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status if it exited (`Some(None)`: killed by a signal).
    pub fn exited(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().expect("wait").map(|s| s.code())
    }

    /// Wait until its output contains `line` (true), it exits, or `limit`
    /// passes (false).
    pub fn wait_for(&mut self, line: &str, limit: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            if self.output().contains(line) {
                return true;
            }
            if self.exited().is_some() || t0.elapsed() > limit {
                return self.output().contains(line);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// End it: SIGTERM, then SIGKILL if it is still there after `grace`.
    /// Returns how long it took to exit and whether SIGKILL was needed.
    pub fn stop(&mut self, grace: Duration) -> (Duration, bool) {
        let t0 = Instant::now();
        if self.exited().is_some() {
            return (Duration::ZERO, false);
        }
        // SAFETY: kill(2) on our own child, which has not been reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        while t0.elapsed() < grace {
            if self.exited().is_some() {
                return (t0.elapsed(), false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        (t0.elapsed(), true)
    }
}

impl Drop for ChVm {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
        let _ = fs::remove_file(&self.log);
    }
}

/// The gvt-rs vGPUs in `/sys/bus/mdev/devices` (whatever their parent),
/// sorted.
pub fn gvt_devices() -> Vec<String> {
    let bus = Path::new("/sys/bus/mdev/devices");
    let mut v: Vec<String> = fs::read_dir(bus)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.retain(|u| {
        fs::read_link(bus.join(u).join("mdev_type"))
            .is_ok_and(|t| t.to_string_lossy().contains("gvt_rs-"))
    });
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [(u32, u32); 6] = [
        FRAME_MIN,
        (300, 200),
        (1023, 767),
        (1024, 768),
        (1280, 800),
        (1920, 1200),
    ];

    fn overlap(a: (u32, u32, u32, u32), b: (u32, u32, u32, u32)) -> bool {
        a.0 < b.0 + b.2 && b.0 < a.0 + a.2 && a.1 < b.1 + b.3 && b.1 < a.1 + a.3
    }

    #[test]
    fn blits_stay_inside_and_copies_never_overlap() {
        for (w, h) in SIZES {
            for frame in 1..=4 {
                let v = frame_blits(frame, w, h);
                assert!(
                    v.iter().any(|b| matches!(b, Blit::Copy { .. })),
                    "{w}x{h}: copies"
                );
                for b in &v {
                    let (r, src) = match *b {
                        Blit::Fill { x, y, w, h, .. } => ((x, y, w, h), None),
                        Blit::Copy { sx, sy, x, y, w, h } => ((x, y, w, h), Some((sx, sy, w, h))),
                    };
                    assert!(
                        r.2 > 0 && r.3 > 0 && r.0 + r.2 <= w && r.1 + r.3 <= h,
                        "{b:?} in {w}x{h}"
                    );
                    if let Some(s) = src {
                        assert!(s.0 + s.2 <= w && s.1 + s.3 <= h, "{b:?} source in {w}x{h}");
                        assert!(!overlap(r, s), "{b:?} overlaps its source");
                    }
                }
                assert_eq!(expected_frame(frame, w, h).len(), (w * h) as usize);
            }
        }
    }

    #[test]
    fn the_picture_has_its_parts() {
        for (w, h) in SIZES[1..].iter().copied() {
            for frame in 1..=2 {
                let px = expected_frame(frame, w, h);
                let at = |x: u32, y: u32| px[(y * w + x) as usize];
                // The border is one colour all round.
                let edge = at(0, 0);
                for x in 0..w {
                    assert_eq!(
                        (at(x, 0), at(x, h - 1)),
                        (edge, edge),
                        "{w}x{h} border at x {x}"
                    );
                }
                for y in 0..h {
                    assert_eq!(
                        (at(0, y), at(w - 1, y)),
                        (edge, edge),
                        "{w}x{h} border at y {y}"
                    );
                }
                // Eight bars, each one colour, rotated by the frame.
                let (top, bottom) = checker_band(h);
                for i in 0..8 {
                    for x in (w * i / 8).max(1)..(w * (i + 1) / 8).min(w - 1) {
                        for y in [1, top / 2, top - 1] {
                            assert_eq!(
                                at(x, y),
                                BARS[((i + frame) % 8) as usize],
                                "{w}x{h} bar {i} at ({x}, {y})"
                            );
                        }
                    }
                }
                // A true checkerboard (fills + doubling copies), two colours.
                let c = checker_cell(frame);
                let (a, b) = (at(1, top), at(c, top));
                assert_ne!(a, b);
                for y in top..bottom {
                    for x in 1..w - 1 {
                        let want = if (x / c + (y - top) / c) % 2 == 0 {
                            a
                        } else {
                            b
                        };
                        assert_eq!(
                            at(x, y),
                            want,
                            "{w}x{h} frame {frame} checkerboard at ({x}, {y})"
                        );
                    }
                }
            }
            assert_ne!(
                expected_frame(1, w, h),
                expected_frame(2, w, h),
                "frames differ"
            );
        }
    }

    #[test]
    fn a_nested_qemu_is_retried_only_when_l2_never_started() {
        // Nothing, or only QEMU's own words and the timed-out process's stacks: retried.
        assert!(!l2_booted(""));
        assert!(!l2_booted("qemu-system-x86_64: warning: host doesn't support requested feature\n---- kernel stacks ----\n"));
        // The L2 kernel's first console line, then a hang: a failure, not retried.
        assert!(l2_booted(
            "[    0.000000] Linux version 6.12.0 (root@rig) #1\n[    1.2] Run /init\n"
        ));
        assert!(nested_retry_marker("kvm", Duration::from_secs(90))
            .starts_with("GVT-RIG: nested-retry: "));
    }

    #[test]
    fn painting_follows_the_list_order() {
        let f = |x, y, w, h, color| Blit::Fill { x, y, w, h, color };
        let v = [
            f(0, 0, 4, 2, 1),
            f(1, 0, 2, 1, 2),
            Blit::Copy {
                sx: 0,
                sy: 0,
                x: 0,
                y: 1,
                w: 4,
                h: 1,
            },
            f(3, 1, 1, 1, 3),
        ];
        assert_eq!(paint(&v, 5, 2), [1, 2, 2, 1, 0, 1, 2, 2, 3, 0]);
    }
}
