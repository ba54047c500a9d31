//! `cargo xtask`: the one entry point for developers and CI.
//!
//! The long steps (apt, debootstrap, kernel preparation, QEMU) are small shell
//! scripts in `tools/`; this program orders them, builds the statically linked
//! in-guest test binaries, and prints how long every phase took.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};
use std::time::{Duration, Instant};

const HELP: &str = "\
cargo xtask <command> [args]

Commands:
  setup            install host packages, the Debian trixie build chroot, the
                   pinned Debian kernel packages, a prepared kernel tree and the
                   L2 kernel (cached in ~/.cache/gvt-rs, idempotent)
  kmod             build the gvt_rs kernel module (and the mtty peer sample)
  vm-test [FILTER] build everything and run the in-guest tests whose name
                   contains FILTER (all when omitted) in a QEMU TCG guest
  demo             boot the VM, load the driver, show it working; saves the
                   nested QEMU's screendump of a vGPU as target/gvt-demo/screen.png
  test             all tests: host `cargo test --workspace`, the gvt-core
                   build with the kernel's rustc 1.85.1, then every VM test
  bench            benchmarks (host and in-guest), printing ratios
  lint-core        check gvt-core with the kernel's compiler and rules
  fuzz [--seconds N]
                   a coverage-guided fuzzing campaign of command submission
                   (driver/core/fuzz/run-fuzz.sh) for N seconds (default 600);
                   prints libFuzzer's executions and any crash

Environment:
  GVT_CACHE        cache directory (default ~/.cache/gvt-rs)
  GVT_VM_TIMEOUT   seconds before a VM run is killed (default 1200)
  GVT_VM_SMP       vCPUs of the VM (default 1; 2 when FILTER contains smp2)
  GVT_VM_DIR       where VM images and logs go (default $GVT_CACHE/vm)
  GVT_VM_FILES     where files the guest exports go (default $GVT_VM_DIR/files)
";

struct Phases {
    done: Vec<(String, Duration)>,
}

impl Phases {
    fn run(&mut self, name: &str, f: impl FnOnce() -> Result<(), String>) {
        let t0 = Instant::now();
        eprintln!("==> {name}");
        let r = f();
        self.done.push((name.to_string(), t0.elapsed()));
        if let Err(e) = r {
            self.report();
            eprintln!("xtask: {name} failed: {e}");
            exit(1);
        }
    }
    fn report(&self) {
        eprintln!("\nphase timings:");
        let mut total = Duration::ZERO;
        for (n, d) in &self.done {
            eprintln!("  {:<40} {:>7.1} s", n, d.as_secs_f64());
            total += *d;
        }
        eprintln!("  {:<40} {:>7.1} s", "total", total.as_secs_f64());
    }
}

/// Where cargo builds: `$CARGO_TARGET_DIR` when set (CI points it at the
/// cache outside the repository, so a fresh clone reuses earlier builds),
/// else the workspace's `target/`.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("target"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn cache() -> PathBuf {
    match env::var_os("GVT_CACHE") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/gvt-rs"),
    }
}

fn sh(cmd: &mut Command) -> Result<(), String> {
    let st = cmd.current_dir(repo()).status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} exited with {st}"))
    }
}

fn tool(script: &str) -> Command {
    let mut c = Command::new("bash");
    c.arg(repo().join("tools").join(script));
    c
}

fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Run a static `cargo` build for the guest (x86_64-unknown-linux-gnu, `+crt-static`,
/// `target/vm`) and return the executables it produced.
fn guest_cargo(args: &[&str], what: &str) -> Result<Vec<PathBuf>, String> {
    let target = "x86_64-unknown-linux-gnu";
    let mut c = cargo();
    c.args(args)
        .args(["--release", "--target", target, "--message-format=json-render-diagnostics"])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", target_dir().join("vm"))
        .current_dir(repo());
    let out = c.output().map_err(|e| format!("cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("building {what} failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "executable":"/path" (null for non-test artifacts)
        if let Some(i) = line.find("\"executable\":\"") {
            let rest = &line[i + 14..];
            if let Some(j) = rest.find('"') {
                bins.push(PathBuf::from(&rest[..j]));
            }
        }
    }
    Ok(bins)
}

/// Build the in-guest test binaries statically and return their paths, followed by
/// the guest's programs (demo, benchmarks, L2 programs) and the `gvtctl` CLI, which
/// tools/vm-image.sh installs as /usr/bin/gvtctl in the guest.
fn build_guest_binaries() -> Result<Vec<PathBuf>, String> {
    let mut bins = guest_cargo(&["test", "-p", "gvt-vmtests", "--no-run"], "guest test binaries")?;
    if bins.is_empty() {
        return Err("no guest test binaries were built".into());
    }
    bins.extend(guest_cargo(&["build", "-p", "gvt-vmtests", "--bins"], "guest programs")?);
    let ctl = guest_cargo(&["build", "-p", "gvtctl", "--bin", "gvtctl"], "gvtctl")?;
    if !ctl.iter().any(|b| b.file_name().is_some_and(|n| n == "gvtctl")) {
        return Err("cargo built no gvtctl binary".into());
    }
    bins.extend(ctl);
    Ok(bins)
}

fn setup(p: &mut Phases) {
    p.run("setup: host packages", || sh(&mut tool("setup-host.sh")));
    p.run("setup: trixie chroot (rustc 1.85.1)", || sh(&mut tool("setup-chroot.sh")));
    p.run("setup: Debian kernel packages", || sh(&mut tool("fetch-kernel.sh")));
    p.run("setup: prepared kernel tree", || sh(&mut tool("prepare-kernel.sh")));
    p.run("setup: L2 kernel", || sh(&mut tool("build-l2-kernel.sh")));
}

fn vm_run(p: &mut Phases, filter: &str, what: &str) {
    vm_run_checked(p, filter, what, false);
}

/// Build the guest image and run the VM; with `self_check`, first prove that
/// the rig fails a run with a failing test and a run with a kernel WARNING.
fn vm_run_checked(p: &mut Phases, filter: &str, what: &str, self_check: bool) {
    let mut bins = Vec::new();
    p.run("build: static guest binaries", || {
        bins = build_guest_binaries()?;
        Ok(())
    });
    let vmdir = env::var_os("GVT_VM_DIR").map(PathBuf::from).unwrap_or_else(|| cache().join("vm"));
    let initrd = vmdir.join("initrd.cpio.gz");
    p.run("build: VM initramfs", || {
        let mut c = tool("vm-image.sh");
        c.arg(&initrd).args(&bins);
        sh(&mut c)
    });
    if self_check {
        p.run("vm: rig self-check (must fail twice)", || {
            for (filter, warn, expect) in [
                ("rig_selftest_failing_test", false, "tests failed inside the VM"),
                ("rig_selftest_passing_test", true, "kernel splat"),
            ] {
                let mut c = tool("vm-run.sh");
                c.arg(&initrd).arg(filter).current_dir(repo());
                if warn {
                    c.env("GVT_RIG_SELFTEST_WARN", "1");
                }
                let out = c.output().map_err(|e| format!("vm-run.sh: {e}"))?;
                let text = String::from_utf8_lossy(&out.stdout);
                if out.status.success() || !text.contains(expect) {
                    return Err(format!(
                        "the rig did not fail a run it must fail ({filter}, warn={warn}); its output:\n{text}"
                    ));
                }
            }
            eprintln!("rig self-check: a failing test and a kernel WARNING each fail a run, as they must");
            Ok(())
        });
    }
    p.run(what, || {
        let mut c = tool("vm-run.sh");
        c.arg(&initrd).arg(filter);
        sh(&mut c)
    });
}

fn host_tests(p: &mut Phases) {
    p.run("host: cargo test --workspace", || sh(cargo().args(["test", "--workspace"])));
    p.run("host: gvt-core with the kernel's rustc", || sh(&mut tool("check-core-msrv.sh")));
    p.run("host: fuzz command submission (30 s)", || {
        let mut c = Command::new("bash");
        c.arg(repo().join("driver/core/fuzz/run-fuzz.sh")).arg("30");
        sh(&mut c)
    });
}

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let mut p = Phases { done: Vec::new() };
    match args.first().map(String::as_str) {
        Some("setup") => setup(&mut p),
        Some("kmod") => {
            setup(&mut p);
            p.run("kmod: build modules", || sh(&mut tool("build-modules.sh")));
        }
        Some("vm-test") => {
            setup(&mut p);
            p.run("kmod: build modules", || sh(&mut tool("build-modules.sh")));
            vm_run(&mut p, args.get(1).map(String::as_str).unwrap_or(""), "vm: tests");
        }
        Some("demo") => {
            setup(&mut p);
            p.run("kmod: build modules", || sh(&mut tool("build-modules.sh")));
            // The demo exports the nested QEMU's screendump of the vGPU
            // (a PNG); tools/vm-run.sh decodes it here.
            let out = repo().join("target").join("gvt-demo");
            let png = out.join("screen.png");
            let _ = fs::remove_file(&png);
            env::set_var("GVT_VM_FILES", &out);
            vm_run(&mut p, "demo", "vm: demo");
            p.run("demo: the vGPU's screen", || {
                let n = fs::metadata(&png).map_err(|e| format!("{}: {e}", png.display()))?.len();
                let shown = png.strip_prefix(repo()).unwrap_or(&png);
                eprintln!("demo: the vGPU's screen as the nested QEMU showed it (QMP screendump, PNG, {n} bytes): {}", shown.display());
                Ok(())
            });
        }
        Some("test") => {
            setup(&mut p);
            host_tests(&mut p);
            p.run("kmod: build modules", || sh(&mut tool("build-modules.sh")));
            vm_run_checked(&mut p, "", "vm: tests", true);
            // The tests that need two vCPUs (named smp2; skipped above).
            vm_run(&mut p, "smp2", "vm: tests on 2 vCPUs");
        }
        Some("bench") => {
            p.run("host: gvt-core benchmarks", || {
                sh(cargo().args(["bench", "-p", "gvt-core", "--features", "fakes"]))
            });
            setup(&mut p);
            p.run("kmod: build modules", || sh(&mut tool("build-modules.sh")));
            vm_run(&mut p, "bench_", "vm: benchmarks");
        }
        Some("lint-core") => p.run("gvt-core with the kernel's rustc", || sh(&mut tool("check-core-msrv.sh"))),
        Some("fuzz") => {
            let secs = match args.get(1).map(String::as_str) {
                None => 600,
                Some("--seconds") => match args.get(2).and_then(|s| s.parse::<u64>().ok()).filter(|n| *n > 0) {
                    Some(n) => n,
                    None => {
                        eprintln!("xtask: fuzz --seconds needs a positive whole number of seconds");
                        exit(2);
                    }
                },
                Some(other) => {
                    eprintln!("xtask: fuzz: unknown argument '{other}' (usage: cargo xtask fuzz [--seconds N])");
                    exit(2);
                }
            };
            p.run(&format!("host: fuzz command submission ({secs} s)"), || {
                let mut c = Command::new("bash");
                c.arg(repo().join("driver/core/fuzz/run-fuzz.sh")).arg(secs.to_string());
                sh(&mut c)
            });
        }
        Some("-h") | Some("--help") | Some("help") | None => {
            print!("{HELP}");
            return;
        }
        Some(other) => {
            eprintln!("xtask: unknown command '{other}'\n\n{HELP}");
            exit(2);
        }
    }
    p.report();
}
