//! Helpers shared by the tests that run inside the VM rig's guest (L1).
//!
//! The rig boots the stock Debian kernel under QEMU TCG with an initramfs that
//! holds these statically linked test binaries, the project's modules, VFIO,
//! mdev and (for nested tests) an unmodified QEMU 10 plus a small L2 kernel.
//! Every test here is `#[ignore]`d on the host (there is no mdev parent there)
//! and run by the rig with `--ignored`.

pub mod guest;
pub mod gvt;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the rig puts the L2 kernel, its initramfs and QEMU's firmware.
pub const L2_DIR: &str = "/l2";

/// A fresh random (v4) UUID from the kernel.
pub fn new_uuid() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid").expect("kernel uuid").trim().to_string()
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
        let create = parent_dir(parent).join("mdev_supported_types").join(ty).join("create");
        fs::write(&create, uuid)?;
        Ok(Mdev { uuid: uuid.to_string(), removed: false })
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
    let out_path = format!("/tmp/run-{}.log", std::process::id() as u64 * 1000 + t0.elapsed().as_nanos() as u64 % 1000);
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
            let _ = fs::OpenOptions::new().append(true).open(&out_path).and_then(|mut f| {
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
    Ran { status, output, elapsed: t0.elapsed() }
}

/// How the nested (L2) QEMU runs: `-accel kvm` when the rig loaded kvm-amd
/// (TCG's emulated SVM), TCG inside TCG otherwise.
pub fn nested_accel() -> &'static str {
    if Path::new("/dev/kvm").exists() { "kvm" } else { "tcg" }
}

/// The command line (program first) that boots the rig's L2 kernel in an
/// unmodified QEMU 10, without devices; `l2_cmd` is passed as `gvt.l2=`.
pub fn l2_qemu_command(l2_cmd: &str) -> Vec<String> {
    l2_qemu_command_accel(nested_accel(), l2_cmd)
}

/// [`l2_qemu_command`] with an explicit accelerator.
pub fn l2_qemu_command_accel(accel: &str, l2_cmd: &str) -> Vec<String> {
    let mut v: Vec<String> = vec!["qemu-system-x86_64".into(), "-L".into(), format!("{L2_DIR}/fw")];
    for a in ["-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot", "-m", "128M"] {
        v.push(a.into());
    }
    v.extend(["-accel".into(), accel.into(), "-cpu".into(), if accel == "kvm" { "host,-xsave" } else { "qemu64" }.into()]);
    v.extend(["-kernel".into(), format!("{L2_DIR}/bzImage"), "-initrd".into(), format!("{L2_DIR}/initrd.gz")]);
    v.extend(["-append".into(), format!("console=ttyS0 panic=-1 noxsave gvt.l2={l2_cmd}")]);
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
    let limit = if accel == "kvm" { limit.min(Duration::from_secs(90)) } else { limit };
    let r = run_l2_once(&q, extra, limit);
    if r.status.is_some() {
        return r;
    }
    // Nested virtualization here is KVM on TCG's emulated SVM: an L2 that
    // never starts is retried once, with the evidence printed (the kernel
    // stacks of every QEMU thread at the timeout).
    eprintln!("nested QEMU ({accel}) timed out; evidence follows, retrying once:\n{}", r.output);
    run_l2_once(&q, extra, limit)
}

fn run_l2_once(q: &[String], extra: &[&str], limit: Duration) -> Ran {
    let accel = q.iter().skip_while(|a| *a != "-accel").nth(1).cloned().unwrap_or_default();
    let mut c = Command::new(&q[0]);
    c.args(&q[1..]).args(extra);
    let r = run_with_timeout(&mut c, limit);
    eprintln!("nested QEMU ({accel}) ran {:.1} s, exit {:?}", r.elapsed.as_secs_f64(), r.status);
    r
}

/// Load `/lib/modules/<name>.ko` (with `params`) unless it is loaded already.
pub fn ensure_module(name: &str, params: &[&str]) {
    if Path::new("/sys/module").join(name.replace('-', "_")).exists() {
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

/// Helpers for the programs that run inside L2 (`src/bin/l2-*.rs`).
pub mod l2 {
    use std::fs;
    use std::os::fd::AsRawFd;

    /// A shared mapping of a PCI resource file (`/sys/bus/pci/devices/*/resourceN`),
    /// with bounds-checked 32/64-bit volatile accesses.
    pub struct Resource {
        ptr: *mut u8,
        len: usize,
    }

    impl Resource {
        /// Map `len` bytes of `path` from byte `off`.
        pub fn map(path: &str, off: usize, len: usize) -> Result<Resource, String> {
            let f = fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("{path}: {e}"))?;
            // SAFETY: a fresh shared mapping of the resource file; the kernel checks the range.
            let p = unsafe {
                libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, f.as_raw_fd(), off as i64)
            };
            if p == libc::MAP_FAILED {
                return Err(format!("mmap {path} at {off:#x}+{len:#x}: {}", std::io::Error::last_os_error()));
            }
            Ok(Resource { ptr: p.cast(), len })
        }

        fn at(&self, off: usize, size: usize) -> *mut u8 {
            assert!(off % size == 0 && off.checked_add(size).is_some_and(|e| e <= self.len), "access {off:#x}/{size} outside the mapping");
            // SAFETY: inside the mapping (checked above).
            unsafe { self.ptr.add(off) }
        }

        pub fn rd(&self, off: usize) -> u32 {
            // SAFETY: `at` returned an aligned address inside the mapping.
            unsafe { std::ptr::read_volatile(self.at(off, 4).cast::<u32>()) }
        }

        pub fn wr(&self, off: usize, v: u32) {
            // SAFETY: as in `rd`.
            unsafe { std::ptr::write_volatile(self.at(off, 4).cast::<u32>(), v) }
        }

        pub fn wr64(&self, off: usize, v: u64) {
            // SAFETY: as in `rd`.
            unsafe { std::ptr::write_volatile(self.at(off, 8).cast::<u64>(), v) }
        }
    }
}
