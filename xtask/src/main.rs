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

mod graph;
mod lanes;

const HELP: &str = "\
cargo xtask <command> [args]

Commands:
  setup            install host packages, the Debian trixie build chroot, the
                   pinned Debian kernel packages, a prepared kernel tree, the
                   L2 kernels (tiny, and with DRM for the native guest driver),
                   a static cloud-hypervisor and the second L1 kernel (distro
                   settings + IOMMUFD; built only by the commands that boot
                   it) (cached in ~/.cache/gvt-rs, idempotent)
  kmod             build the gvt_rs kernel module (and the mtty and mbochs peer samples)
  vm-test [--kernel debian|distro] [FILTER]
                   build everything and run the in-guest tests whose name
                   contains FILTER (a,b,c: any of them) in a QEMU TCG guest;
                   without FILTER, every VM run `test` makes (the rig's
                   self-check, all tests, the distro set) in parallel VMs;
                   --kernel distro boots the second L1 kernel (Debian's
                   build-wide settings + IOMMUFD, the VFIO cdev, MODVERSIONS
                   with GENDWARFKSYMS) with the module built against it, and
                   its FILTER defaults to the distro set (DISTRO_SET)
  demo             boot the VM, load the driver, show it working; saves the
                   nested QEMU's screendump of a vGPU as target/gvt-demo/screen.png;
                   a vGPU in cloud-hypervisor running the guest driver in L2;
                   last, a Linux guest on the native driver gvt_drm, its
                   console on the vGPU saved as target/gvt-demo/console.png
  test             all tests: host `cargo test --workspace`, the benches built
                   (--no-run), the gvt-core build with the kernel's rustc
                   1.85.1, fuzzing, the rig self-check, then every VM test,
                   last the distro set on the distro kernel
  self-check       only the rig's self-check (VM runs it must fail, each for
                   its own reason; `test` runs it too)
  bench            benchmarks (host and in-guest), printing ratios
  lint             formatting (cargo fmt --check), clippy -D warnings, the
                   core with the kernel's compiler, no import circles in the
                   core or the module (`test` runs it first)
  lint-core        check gvt-core with the kernel's compiler and rules
  fuzz [--seconds N]
                   a coverage-guided fuzzing campaign of command submission
                   and migration resume (driver/core/fuzz/run-fuzz.sh) for N
                   seconds (default 600);
                   prints libFuzzer's executions and any crash

Environment:
  GVT_CACHE        cache directory (default ~/.cache/gvt-rs)
  GVT_VM_TIMEOUT   seconds before a VM run is killed (default 1800)
  GVT_VM_SMP       vCPUs of the VM (default 1; 2 when FILTER contains smp2)
  GVT_VM_LANES     VMs `test` runs at once (default: the host's cores; the
                   main set is split by test binary, longest first, from the
                   times of earlier runs in $GVT_VM_DIR/vm-times.tsv)
  GVT_VM_DIR       where VM images and logs go (default $GVT_CACHE/vm); each
                   run's list of tests made on the host is expected-*.txt there
  GVT_VM_FILES     where files the guest exports go (default $GVT_VM_DIR/files)
";

struct Phases {
    /// (phase, time, counted in the total: false for runs that overlapped
    /// inside a phase that is counted)
    done: Vec<(String, Duration, bool)>,
}

impl Phases {
    fn run(&mut self, name: &str, f: impl FnOnce() -> Result<(), String>) {
        let t0 = Instant::now();
        eprintln!("==> {name}");
        let r = f();
        self.done.push((name.to_string(), t0.elapsed(), true));
        if let Err(e) = r {
            self.report();
            eprintln!("xtask: {name} failed: {e}");
            exit(1);
        }
    }
    /// A phase timed by its caller; `counted: false` for one that overlapped
    /// others inside a counted phase.
    fn record(&mut self, name: &str, d: Duration, counted: bool) {
        self.done.push((name.to_string(), d, counted));
    }
    fn report(&self) {
        eprintln!("\nphase timings:");
        let mut total = Duration::ZERO;
        for (n, d, counted) in &self.done {
            if *counted {
                eprintln!("  {:<40} {:>7.1} s", n, d.as_secs_f64());
                total += *d;
            } else {
                eprintln!("    | {:<36} {:>7.1} s", n, d.as_secs_f64());
            }
        }
        eprintln!("  {:<40} {:>7.1} s", "total", total.as_secs_f64());
    }
}

/// Where cargo builds: `$CARGO_TARGET_DIR` when set (CI points it at the
/// cache outside the repository, so a fresh clone reuses earlier builds),
/// else the workspace's `target/`.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cache() -> PathBuf {
    match env::var_os("GVT_CACHE") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/gvt-rs"),
    }
}

fn sh(cmd: &mut Command) -> Result<(), String> {
    let st = cmd
        .current_dir(repo())
        .status()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
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
    Ok(guest_cargo_split(args, what)?
        .into_iter()
        .map(|(p, _)| p)
        .collect())
}

/// [`guest_cargo`], each executable with whether it is a libtest harness
/// (`"test":true` in its artifact's profile) or a program.
fn guest_cargo_split(args: &[&str], what: &str) -> Result<Vec<(PathBuf, bool)>, String> {
    let target = "x86_64-unknown-linux-gnu";
    let mut c = cargo();
    c.args(args)
        .args([
            "--release",
            "--target",
            target,
            "--message-format=json-render-diagnostics",
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", target_dir().join("vm"))
        .current_dir(repo());
    let out = c.output().map_err(|e| format!("cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building {what} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut bins = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "executable":"/path" (null for non-test artifacts)
        if let Some(i) = line.find("\"executable\":\"") {
            let rest = &line[i + 14..];
            if let Some(j) = rest.find('"') {
                // "profile":{...,"test":true} (the target has a "test" key too)
                let profile = line
                    .split("\"profile\":{")
                    .nth(1)
                    .and_then(|p| p.split('}').next())
                    .unwrap_or("");
                bins.push((PathBuf::from(&rest[..j]), profile.contains("\"test\":true")));
            }
        }
    }
    Ok(bins)
}

/// The in-guest test binaries (libtest executables, the guest's /tests) and
/// the guest's other programs (demo, benchmarks, L2 programs, the `gvtctl` CLI,
/// which tools/vm-image.sh installs as /usr/bin/gvtctl in the guest).
struct GuestBinaries {
    tests: Vec<PathBuf>,
    programs: Vec<PathBuf>,
}

/// Build the in-guest test binaries and programs statically.
fn build_guest_binaries() -> Result<GuestBinaries, String> {
    // `cargo test --no-run` also builds (and names) the package's programs.
    let (tests, _): (Vec<_>, Vec<_>) = guest_cargo_split(
        &["test", "-p", "gvt-vmtests", "--no-run"],
        "guest test binaries",
    )?
    .into_iter()
    .partition(|b| b.1);
    let tests: Vec<PathBuf> = tests.into_iter().map(|b| b.0).collect();
    if tests.is_empty() {
        return Err("no guest test binaries were built".into());
    }
    let mut programs = guest_cargo(&["build", "-p", "gvt-vmtests", "--bins"], "guest programs")?;
    let ctl = guest_cargo(&["build", "-p", "gvtctl", "--bin", "gvtctl"], "gvtctl")?;
    if !ctl
        .iter()
        .any(|b| b.file_name().is_some_and(|n| n == "gvtctl"))
    {
        return Err("cargo built no gvtctl binary".into());
    }
    programs.extend(ctl);
    Ok(GuestBinaries { tests, programs })
}

/// The name a test binary has in the guest's /tests (tools/vm-image.sh drops
/// cargo's `-<16 hex digits>` suffix).
fn guest_name(bin: &Path) -> String {
    let n = bin
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    match n.rsplit_once('-') {
        Some((stem, h)) if h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            stem.to_string()
        }
        _ => n,
    }
}

/// The tests `cargo xtask test` runs on the distro kernel (tools/build-distro-kernel.sh):
/// the iommufd/cdev ones (named `iommufd`: left out of the Debian kernel's unfiltered run,
/// where they have no /dev/iommu), the vGPU lifecycle, the legacy group/type1 consumer
/// path, and nested unmodified QEMU over the group and over the cdev with `-object iommufd`
/// (`nested_qemu_kvm_vgpu`, `iommufd_nested_qemu_cdev_runs_the_guest_driver`).
const DISTRO_SET: &str =
    "iommufd,life_,vfio_aperture_mmap_and_region_agree,vfio_bad_requests,nested_qemu_kvm_vgpu";

/// The time `bench_native_blitter_*` (tests/vm/tests/gvt_drm.rs) adds to a VM run.
const NATIVE_BLITTER_BENCH_S: u64 = 3600;
/// The time limit of the VM run of IGT against the guest driver
/// (`gvt_drm_igt`): IGT's 13 tests in nested TCG inside the rig's TCG guest.
const IGT_RUN_TIMEOUT_S: u64 = 5400;

/// Which L1 kernel the tools boot and build against (`GVT_KERNEL` of tools/common.sh).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Debian,
    Distro,
}

impl Kernel {
    fn name(self) -> &'static str {
        match self {
            Kernel::Debian => "debian",
            Kernel::Distro => "distro",
        }
    }
}

/// Point the tools at `k` (every later tool() run inherits it).
fn use_kernel(k: Kernel) {
    env::set_var("GVT_KERNEL", k.name());
}

fn current_kernel() -> Kernel {
    match env::var("GVT_KERNEL").as_deref() {
        Ok("distro") => Kernel::Distro,
        _ => Kernel::Debian,
    }
}

/// The distro kernel's VM run: its modules, then `filter` (the distro set when empty).
fn distro_run(p: &mut Phases, filter: &str) {
    use_kernel(Kernel::Distro);
    p.run("kmod: build modules (distro kernel)", || {
        sh(&mut tool("build-modules.sh"))
    });
    let f = if filter.is_empty() {
        DISTRO_SET
    } else {
        filter
    };
    vm_run(p, f, "vm: distro kernel (iommufd, cdev, MODVERSIONS)");
    use_kernel(Kernel::Debian);
}

/// libtest arguments that select a run's tests: the names containing
/// `filter` (or any of its comma-separated parts), or every test but the benchmarks, the rig's self-check and
/// the native guest driver's (`gvt_drm_`: minutes of nested TCG, a VM run of their own in `cargo xtask test`)
/// and the distro kernel's (`iommufd`: [`DISTRO_SET`], run on that kernel) when there is no filter.  tools/vm/init applies the same rules in the guest.
fn selection(filter: &str) -> Vec<String> {
    let mut v: Vec<String> = vec!["--ignored".into()];
    if filter.is_empty() {
        v.extend(
            [
                "--skip",
                "bench_",
                "--skip",
                "rig_selftest_",
                "--skip",
                "gvt_drm_",
                "--skip",
                "iommufd",
            ]
            .map(String::from),
        );
    }
    // Tests named smp2 need two vCPUs: a 1-vCPU guest skips them (tools/vm/init).
    if vm_smp(filter) < 2 {
        v.extend(["--skip", "smp2"].map(String::from));
    }
    if !filter.is_empty() {
        v.extend(
            filter
                .split(',')
                .filter(|f| !f.is_empty())
                .map(String::from),
        );
    }
    v
}

/// vCPUs of a VM run with `filter`, as tools/vm-run.sh picks them:
/// `$GVT_VM_SMP`, else 2 when the filter names smp2 tests, else 1.
fn vm_smp(filter: &str) -> u32 {
    match std::env::var("GVT_VM_SMP")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(n) => n,
        None if filter.contains("smp2") => 2,
        None => 1,
    }
}

/// List, on the host and before the VM boots, every test of every guest test
/// binary that a run with `filter` must report, into `out` (lines
/// `BINARY TEST`, what tools/vm-run.sh accounts against); returns how many.
/// A binary that cannot list its tests fails here.
fn list_expected(tests: &[PathBuf], filter: &str, out: &Path) -> Result<usize, String> {
    let mut lines = Vec::new();
    for bin in tests {
        let name = guest_name(bin);
        for t in list_tests(bin, filter)? {
            lines.push(format!("{name} {t}\n"));
        }
    }
    if lines.is_empty() {
        return Err(format!("no VM test matches '{filter}'"));
    }
    fs::write(out, lines.concat()).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(lines.len())
}

/// The set-up: what every command needs, built once into the cache (each
/// script returns at once when its product is cached).  The chroot, the
/// kernel packages and the prepared tree come one after the other; the
/// builds that only need the host's cargo (cloud-hypervisor, from the
/// start) or the unpacked linux-source (the L2 kernels and, with `distro`,
/// the second L1 kernel) run side by side, so the serial parts of each
/// (apt, rustc on the kernel crate, links, compression) overlap the others'
/// parallel ones on a 2-core machine.
fn setup(p: &mut Phases, distro: bool, igt: bool) {
    p.run("setup: host packages", || sh(&mut tool("setup-host.sh")));
    eprintln!("==> setup: cloud-hypervisor (beside the next phases; its log when it ends)");
    let ch = background_tool("build-cloud-hypervisor.sh");
    p.run("setup: trixie chroot (rustc 1.85.1)", || {
        sh(&mut tool("setup-chroot.sh"))
    });
    p.run("setup: Debian kernel packages", || {
        sh(&mut tool("fetch-kernel.sh"))
    });
    p.run("setup: prepared kernel tree", || {
        sh(&mut tool("prepare-kernel.sh"))
    });
    let t0 = Instant::now();
    let mut jobs = vec![
        ("setup: L2 kernel", background_tool("build-l2-kernel.sh")),
        (
            "setup: L2 DRM kernel (guest driver)",
            background_tool("build-l2-drm-kernel.sh"),
        ),
        // Debian's weston for the guest driver's weston check (gvt_drm),
        // packed as a segment of the L2 initramfs.
        (
            "setup: weston (guest driver)",
            background_tool("build-weston.sh"),
        ),
    ];
    // IGT for the guest driver's IGT run (gvt_drm_igt: `test`, `vm-test`
    // without a filter or with one naming it): built once in the chroot into
    // the cache, packed as a segment of the L2 initramfs.
    if igt {
        jobs.push((
            "setup: IGT (guest driver's KMS tests)",
            background_tool("build-igt.sh"),
        ));
    }
    if distro {
        jobs.push((
            "setup: distro kernel (iommufd)",
            background_tool("build-distro-kernel.sh"),
        ));
    }
    jobs.push(("setup: cloud-hypervisor", ch));
    eprintln!(
        "==> setup: {} builds side by side (their logs as each ends)",
        jobs.len()
    );
    let mut ran = Vec::new();
    let mut failed = None;
    for (name, job) in jobs {
        let (r, took, log) = job.join().unwrap_or_else(|_| {
            (
                Err("its thread panicked".into()),
                Duration::ZERO,
                String::new(),
            )
        });
        eprintln!("==> {name}: {:.1} s", took.as_secs_f64());
        eprint!("{log}");
        if let Err(e) = r {
            failed.get_or_insert(format!("{name} failed: {e}"));
        }
        ran.push((name, took));
    }
    p.record("setup: builds side by side", t0.elapsed(), true);
    for (name, took) in ran {
        p.record(name, took, false);
    }
    if let Some(e) = failed {
        p.report();
        eprintln!("xtask: {e}");
        exit(1);
    }
}

/// A tools/ script started in its own thread, its output kept in a log in
/// the cache; the thread returns its result, run time and that output.
fn background_tool(
    script: &'static str,
) -> std::thread::JoinHandle<(Result<(), String>, Duration, String)> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let log = cache().join(format!("setup-{}.log", script.trim_end_matches(".sh")));
        let r = fs::create_dir_all(cache())
            .and_then(|_| fs::File::create(&log))
            .and_then(|f| Ok((f.try_clone()?, f)))
            .map_err(|e| format!("{}: {e}", log.display()))
            .and_then(|(out, err)| sh(tool(script).stdout(out).stderr(err)));
        let out = fs::read_to_string(&log).unwrap_or_default();
        (r, t0.elapsed(), out)
    })
}

/// The second L1 kernel alone (after [`setup`] without it; `setup` with
/// `distro` builds it beside the others).
fn setup_distro(p: &mut Phases) {
    p.run("setup: distro kernel (iommufd)", || {
        sh(&mut tool("build-distro-kernel.sh"))
    });
}

fn vm_run(p: &mut Phases, filter: &str, what: &str) {
    vm_run_checked(p, filter, what, false);
}

/// The tools/vm-run.sh command for one VM run of the tests `filter` selects,
/// with the list of them it must account for made on the host first.
fn vm_command(initrd: &Path, tests: &[PathBuf], filter: &str) -> Result<Command, String> {
    let expect = initrd.with_file_name(format!(
        "expected-{}.txt",
        if filter.is_empty() { "all" } else { filter }
    ));
    vm_command_expect(initrd, tests, filter, &expect)
}

/// [`vm_command`] with the list of tests written to `expect`.
fn vm_command_expect(
    initrd: &Path,
    tests: &[PathBuf],
    filter: &str,
    expect: &Path,
) -> Result<Command, String> {
    let n = list_expected(tests, filter, expect)?;
    eprintln!(
        "vm: {n} tests listed on the host for this run ({})",
        expect.display()
    );
    let mut c = tool("vm-run.sh");
    c.arg(initrd)
        .arg(filter)
        .env("GVT_VM_EXPECT", expect)
        .current_dir(repo());
    // A run with the IGT test gets its time on top of vm-run.sh's default
    // (unless GVT_VM_TIMEOUT says otherwise; the lanes set their own).
    let listed = fs::read_to_string(expect).unwrap_or_default();
    if env::var_os("GVT_VM_TIMEOUT").is_none()
        && listed.lines().any(|l| l.ends_with(" gvt_drm_igt"))
    {
        c.env("GVT_VM_TIMEOUT", (1800 + IGT_RUN_TIMEOUT_S).to_string());
    }
    // The native driver's blitter benchmark boots 14 nested L2 guests (1, 2
    // and 4 at once, audit on and off): its time on top as well.
    if env::var_os("GVT_VM_TIMEOUT").is_none()
        && listed.lines().any(|l| l.contains(" bench_native_blitter_"))
    {
        c.env(
            "GVT_VM_TIMEOUT",
            (1800 + NATIVE_BLITTER_BENCH_S).to_string(),
        );
    }
    Ok(c)
}

/// Build the VM's initramfs with `bins`; returns its path.
fn vm_initrd(p: &mut Phases, bins: &GuestBinaries) -> PathBuf {
    let mut vmdir = env::var_os("GVT_VM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join("vm"));
    // tools/common.sh: the distro kernel's images live in $VMDIR/distro.
    if current_kernel() == Kernel::Distro {
        vmdir = vmdir.join("distro");
    }
    let initrd = vmdir.join("initrd.cpio.gz");
    p.run("build: VM initramfs", || {
        let mut c = tool("vm-image.sh");
        c.arg(&initrd).args(&bins.tests).args(&bins.programs);
        sh(&mut c)
    });
    initrd
}

/// Build the guest image and run the VM; with `self_check`, first prove that
/// the rig fails each run it must fail, for its own reason.
fn vm_run_checked(p: &mut Phases, filter: &str, what: &str, self_check: bool) {
    let mut bins = GuestBinaries {
        tests: Vec::new(),
        programs: Vec::new(),
    };
    p.run("build: static guest binaries", || {
        bins = build_guest_binaries()?;
        Ok(())
    });
    let initrd = vm_initrd(p, &bins);
    if self_check {
        p.run(
            "vm: rig self-check (6 runs: 5 must fail, a hung one be retried)",
            || rig_self_check(&initrd, &bins.tests),
        );
    }
    p.run(what, || sh(&mut vm_command(&initrd, &bins.tests, filter)?));
}

/// The rig's self-check: runs that must fail, each with the evidence it must
/// give (tests/vm/tests/selftest.rs, tools/vm/init, tools/vm-run.sh).
fn rig_self_check(initrd: &Path, tests: &[PathBuf]) -> Result<(), String> {
    let dir = initrd.parent().unwrap_or(Path::new(".")).to_path_buf();
    let report = rig_self_check_in(initrd, tests, &dir)?;
    eprint!("{report}");
    Ok(())
}

/// [`rig_self_check`] with its VM runs' logs and lists in `dir`; what it
/// found, as lines.
fn rig_self_check_in(initrd: &Path, tests: &[PathBuf], dir: &Path) -> Result<String, String> {
    let mut report = String::new();
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 5] = [
        (
            "a failing test",
            "rig_selftest_failing_test",
            &[],
            &[
                "FAILED: selftest rig_selftest_failing_test (exit 101)",
                "vm-tests: 0 passed, 1 failed, 0 missing",
            ],
        ),
        (
            "a kernel WARNING at boot and a hung task late in a long run",
            "rig_selftest_late_warning",
            &[("GVT_RIG_SELFTEST_WARN", "1")],
            &[
                "FAILED: kernel splat: ",
                "WARNING:",
                "blocked for more than",
                "vm-test: kernel log complete since boot",
                "vm-tests: 1 passed, 0 failed, 0 missing",
            ],
        ),
        (
            "a test binary that cannot start",
            "rig_selftest_passing_test",
            &[("GVT_RIG_SELFTEST_BREAK", "selftest")],
            &[
                "missing: selftest rig_selftest_passing_test (binary selftest cannot list",
                "vm-tests: 0 passed, 0 failed, 1 missing",
            ],
        ),
        (
            "a listed test the guest leaves out",
            "rig_selftest_passing_test",
            &[("GVT_RIG_SELFTEST_HIDE", "rig_selftest_passing_test")],
            &[
                "missing: selftest rig_selftest_passing_test (listed on the host, never reported",
                "vm-tests: 0 passed, 0 failed, 1 missing",
            ],
        ),
        (
            "a guest that hangs after its heartbeat started",
            "rig_selftest_passing_test",
            &[
                ("GVT_RIG_SELFTEST_HANG", "rig_selftest_passing_test"),
                ("GVT_VM_SILENCE", "30"),
            ],
            &[
                "FAILED: the VM hung: no heartbeat from the guest for ",
                "(the last at uptime ",
                "FAILED: selftest rig_selftest_passing_test (never finished",
                "vm-tests: 0 passed, 1 failed, 0 missing",
            ],
        ),
    ];
    for (n, (what, filter, env, evidence)) in cases.into_iter().enumerate() {
        let mut c = vm_command_expect(
            initrd,
            tests,
            filter,
            &dir.join(format!("self-check-{}-expected.txt", n + 1)),
        )?;
        c.envs(env.iter().copied()).env("GVT_VM_DIR", dir);
        let o = c.output().map_err(|e| format!("vm-run.sh: {e}"))?;
        let (passed, out) = (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        );
        let saved = dir.join(format!("self-check-{}.log", n + 1));
        let _ = fs::write(&saved, &out);
        // The evidence must come from the judge (tools/vm-run.sh's own
        // `vm-test: ...` / `vm-tests: ...` lines), not from the guest's output.
        let judged = |e: &str| {
            out.lines()
                .any(|l| l.starts_with("vm-test") && l.contains(e))
        };
        let lacking: Vec<&&str> = evidence.iter().filter(|e| !judged(e)).collect();
        if passed || !lacking.is_empty() {
            return Err(format!(
                "the rig did not fail the run with {what} as it must (passed: {passed}, evidence missing: {lacking:?}); its output:\n{out}"
            ));
        }
        report.push_str(&format!(
            "rig self-check: the run with {what} failed, as it must (its output: {})\n",
            saved.display()
        ));
    }
    // A lane's run that hangs (the second of two tests) runs the test it
    // never finished again in a new VM, which passes it; the verdict and the
    // log say so.
    let hang_dir = dir.join("self-check-retry");
    let selftest: Vec<PathBuf> = tests
        .iter()
        .filter(|t| guest_name(t) == "selftest")
        .cloned()
        .collect();
    let (ok, out) = lane_vm_run(
        initrd,
        &selftest,
        "rig_selftest_another_passing_test,rig_selftest_passing_test",
        &hang_dir,
        &hang_dir.join("files"),
        RunHow {
            bins: Some("selftest"),
            kernel: Kernel::Debian,
            timeout_s: None,
            first_env: &[
                ("GVT_RIG_SELFTEST_HANG", "rig_selftest_passing_test"),
                ("GVT_VM_SILENCE", "30"),
            ],
            hang_retries: HANG_RETRIES,
        },
    );
    let evidence = [
        "vm-test: FAILED: the VM hung: no heartbeat from the guest for ",
        "vm: the VM hung (no heartbeat from the guest for ",
        "1 unfinished tests of selftest run again in a new VM",
        "vm-tests: 1 passed, 0 failed, 0 missing (1 listed on the host)",
        "vm-tests: 2 passed, 0 failed, 0 missing (2 listed on the host; a hung VM's 1 unfinished tests ran again)",
    ];
    let lacking: Vec<&&str> = evidence
        .iter()
        .filter(|e| !out.lines().any(|l| l.starts_with("vm") && l.contains(*e)))
        .collect();
    if ok.is_err() || !lacking.is_empty() {
        return Err(format!(
            "a lane's hung run was not retried and passed as it must (verdict: {ok:?}, evidence missing: {lacking:?}); its output:\n{out}"
        ));
    }
    report.push_str(&format!(
        "rig self-check: the run that hung had its unfinished test run again in a new VM, which passed it (its output: {})\n",
        hang_dir.join("run.log").display()
    ));
    Ok(report)
}

/// A whole VM run of `cargo xtask test` besides the main set.
struct WholeRun {
    key: &'static str,
    what: &'static str,
    filter: &'static str,
    kernel: Kernel,
    /// Only these test binaries (comma-separated; `GVT_VM_BINS`), or all.
    bins: Option<&'static str>,
    /// The run's time limit (`GVT_VM_TIMEOUT`), or tools/vm-run.sh's default.
    timeout_s: Option<u64>,
}

/// What `cargo xtask test` runs in VMs: the rig's self-check, the main set
/// (split by test binary), the 2-vCPU set and the native guest driver's
/// nested set, in parallel lanes (`lanes.rs`; `$GVT_VM_LANES`, default the
/// number of host cores).  Each run is judged on its own; the verdict is
/// every run's, and the main set's binaries are checked to be split without
/// loss.
fn vm_test_lanes(p: &mut Phases) {
    let mut bins = GuestBinaries {
        tests: Vec::new(),
        programs: Vec::new(),
    };
    p.run("build: static guest binaries", || {
        bins = build_guest_binaries()?;
        Ok(())
    });
    let initrd = vm_initrd(p, &bins);
    let vmdir = initrd.parent().unwrap_or(Path::new(".")).to_path_buf();
    let runs = [
        WholeRun {
            key: "self-check",
            what: "vm: rig self-check (6 runs: 5 must fail, a hung one be retried)",
            filter: "",
            kernel: Kernel::Debian,
            bins: None,
            timeout_s: None,
        },
        // The tests that need two vCPUs (named smp2; not in the main set).
        WholeRun {
            key: "smp2",
            what: "vm: tests on 2 vCPUs",
            filter: "smp2",
            kernel: Kernel::Debian,
            bins: None,
            timeout_s: None,
        },
        // The native guest driver in nested QEMU (not in the main set: its L2
        // boots take minutes; a VM run and time limit of their own).
        WholeRun {
            key: "gvt_drm",
            what: "vm: native guest driver (nested)",
            filter: "gvt_drm_fbcon,gvt_drm_vblank,gvt_drm_blitter,gvt_drm_weston,\
                     gvt_drm_edid_hotplug,gvt_drm_unbind_rebind,gvt_drm_vmm_reset",
            kernel: Kernel::Debian,
            bins: Some("gvt_drm"),
            timeout_s: None,
        },
        // IGT against the native guest driver (tests/vm/tests/gvt_drm_igt.rs):
        // one nested L2 running IGT's runner over issue 13's tests, the
        // results against tests/vm/igt/gvt_drm-{skips,fails,flakes}.txt; the
        // longest run (kms_flip's fixed 30 s subtests), a lane to itself.
        WholeRun {
            key: "gvt_drm_igt",
            what: "vm: IGT on the native guest driver (nested)",
            filter: "gvt_drm_igt",
            kernel: Kernel::Debian,
            bins: Some("gvt_drm_igt"),
            timeout_s: Some(1800 + IGT_RUN_TIMEOUT_S),
        },
        // The second L1 kernel (IOMMUFD, VFIO cdev, MODVERSIONS): the distro
        // set, with the module built against that kernel.
        WholeRun {
            key: "distro",
            what: "vm: distro kernel (iommufd, cdev, MODVERSIONS)",
            filter: DISTRO_SET,
            kernel: Kernel::Distro,
            bins: None,
            timeout_s: None,
        },
    ];
    // The distro kernel's modules and image (the same guest binaries).
    setup_distro(p);
    use_kernel(Kernel::Distro);
    p.run("kmod: build modules (distro kernel)", || {
        sh(&mut tool("build-modules.sh"))
    });
    let distro_initrd = vm_initrd(p, &bins);
    use_kernel(Kernel::Debian);
    let n_lanes = env::var("GVT_VM_LANES")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 8);
    let times_file = vmdir.join("vm-times.tsv");
    // This machine's last runs, over the estimates checked in with the tests
    // (tests/vm/vm-times.tsv, for a first run).
    let mut times = lanes::load_times(&repo().join("tests/vm/vm-times.tsv"));
    times.extend(lanes::load_times(&times_file));
    // The main set's binaries: those with a test in it.
    let mut split: Vec<(String, PathBuf)> = Vec::new();
    for b in &bins.tests {
        match list_tests(b, "") {
            Ok(t) if !t.is_empty() => split.push((guest_name(b), b.clone())),
            Ok(_) => {}
            Err(e) => {
                p.report();
                eprintln!("xtask: {e}");
                exit(1);
            }
        }
    }
    let est_runs: Vec<f64> = runs
        .iter()
        .map(|r| {
            times
                .get(&format!("run:{}", r.key))
                .copied()
                .unwrap_or(lanes::UNKNOWN_RUN_S)
        })
        .collect();
    let est_bins: Vec<(String, f64)> = split
        .iter()
        .map(|(n, _)| {
            let e = times
                .get(&format!("bin:{n}"))
                .copied()
                .unwrap_or(lanes::UNKNOWN_BINARY_S);
            (n.clone(), e)
        })
        .collect();
    // One VM boot of the rig (TCG, 1 vCPU) to the first test: ~25 s.
    let plan = lanes::plan(n_lanes, &est_runs, &est_bins, 25.0);
    let names: Vec<String> = split.iter().map(|(n, _)| n.clone()).collect();
    if let Err(e) = lanes::check_partition(&plan, &names) {
        p.report();
        eprintln!("xtask: {e}");
        exit(1);
    }
    eprintln!(
        "==> vm: {} runs in {} parallel lanes (estimates from {})",
        runs.len() + plan.iter().filter(|l| !l.bins.is_empty()).count(),
        plan.len(),
        times_file.display()
    );
    for (i, l) in plan.iter().enumerate() {
        let whole: Vec<&str> = l.runs.iter().map(|r| runs[*r].key).collect();
        eprintln!(
            "vm: lane {}: ~{:.0} s: {:?} + the main set's binaries {:?}",
            i + 1,
            l.load,
            whole,
            l.bins
        );
    }
    let files = env::var_os("GVT_VM_FILES")
        .map(PathBuf::from)
        .unwrap_or_else(|| vmdir.join("files"));
    let print = std::sync::Mutex::new(());
    struct Done {
        what: String,
        key: String,
        took: Duration,
        ok: Result<(), String>,
        log: String,
    }
    let t0 = Instant::now();
    let done: Vec<Done> = std::thread::scope(|sc| {
        let handles: Vec<_> = plan
            .iter()
            .enumerate()
            .map(|(li, lane)| {
                let (runs, split, initrd, distro_initrd, bins, vmdir, files, print) = (
                    &runs,
                    &split,
                    &initrd,
                    &distro_initrd,
                    &bins,
                    &vmdir,
                    &files,
                    &print,
                );
                sc.spawn(move || {
                    let mut out = Vec::new();
                    struct Job<'a> {
                        key: String,
                        what: String,
                        filter: &'a str,
                        tests: Vec<PathBuf>,
                        self_check: bool,
                        kernel: Kernel,
                        /// `GVT_VM_BINS`: only these binaries run.
                        only: Option<String>,
                        timeout_s: Option<u64>,
                    }
                    let mut jobs: Vec<Job> = lane
                        .runs
                        .iter()
                        .map(|r| {
                            let w = &runs[*r];
                            let tests = match w.bins {
                                Some(only) => bins
                                    .tests
                                    .iter()
                                    .filter(|b| only.split(',').any(|n| guest_name(b) == n))
                                    .cloned()
                                    .collect(),
                                None => bins.tests.clone(),
                            };
                            Job {
                                key: w.key.to_string(),
                                what: w.what.to_string(),
                                filter: w.filter,
                                tests,
                                self_check: w.key == "self-check",
                                kernel: w.kernel,
                                only: w.bins.map(String::from),
                                timeout_s: w.timeout_s,
                            }
                        })
                        .collect();
                    if !lane.bins.is_empty() {
                        let sub: Vec<PathBuf> = split
                            .iter()
                            .filter(|(n, _)| lane.bins.contains(n))
                            .map(|(_, b)| b.clone())
                            .collect();
                        let only = sub
                            .iter()
                            .map(|b| guest_name(b))
                            .collect::<Vec<_>>()
                            .join(",");
                        jobs.insert(
                            0,
                            Job {
                                key: format!("tests-{}", li + 1),
                                what: format!(
                                    "vm: tests, lane {} ({} binaries)",
                                    li + 1,
                                    sub.len()
                                ),
                                filter: "",
                                tests: sub,
                                self_check: false,
                                kernel: Kernel::Debian,
                                only: Some(only),
                                timeout_s: None,
                            },
                        );
                    }
                    for Job {
                        key,
                        what,
                        filter,
                        tests,
                        self_check,
                        kernel,
                        only,
                        timeout_s,
                    } in jobs
                    {
                        let dir = vmdir.join("lanes").join(&key);
                        let _ = fs::remove_dir_all(&dir);
                        let t = Instant::now();
                        let (ok, log) = if self_check {
                            let _ = fs::create_dir_all(&dir);
                            match rig_self_check_in(initrd, &tests, &dir) {
                                Ok(r) => (Ok(()), r),
                                Err(e) => (Err("the rig self-check failed".into()), e),
                            }
                        } else {
                            lane_vm_run(
                                if kernel == Kernel::Distro {
                                    distro_initrd
                                } else {
                                    initrd
                                },
                                &tests,
                                filter,
                                &dir,
                                files,
                                RunHow {
                                    bins: only.as_deref(),
                                    kernel,
                                    timeout_s,
                                    first_env: &[],
                                    hang_retries: HANG_RETRIES,
                                },
                            )
                        };
                        let took = t.elapsed();
                        {
                            let _g = print.lock().unwrap_or_else(|e| e.into_inner());
                            println!("{log}");
                            eprintln!(
                                "==> {what}: {} in {:.1} s (lane {})",
                                if ok.is_ok() { "passed" } else { "FAILED" },
                                took.as_secs_f64(),
                                li + 1
                            );
                        }
                        out.push(Done {
                            what,
                            key,
                            took,
                            ok,
                            log,
                        });
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let wall = t0.elapsed();
    // Estimates for the next run, from this one (not from a run that hung
    // and ran again: its time is two runs' and a wait).
    for d in done.iter().filter(|d| !lanes::retried_after_hang(&d.log)) {
        if d.key.starts_with("tests-") {
            for (b, t) in lanes::binary_times(&d.log) {
                times.insert(format!("bin:{b}"), t);
            }
        } else {
            times.insert(format!("run:{}", d.key), d.took.as_secs_f64());
        }
    }
    lanes::save_times(&times_file, &times);
    p.record(
        &format!("vm: {} runs in {} lanes", done.len(), plan.len()),
        wall,
        true,
    );
    let mut all = lanes::Tally::default();
    eprintln!();
    for d in &done {
        p.record(&d.what, d.took, false);
        match lanes::Tally::from_log(&d.log) {
            Some(t) => {
                all.add(t);
                eprintln!(
                    "vm-tests ({}): {} passed, {} failed, {} missing, {} skipped",
                    d.what, t.passed, t.failed, t.missing, t.skipped
                );
            }
            None => eprintln!(
                "vm-tests ({}): {}",
                d.what,
                if d.ok.is_ok() { "passed" } else { "FAILED" }
            ),
        }
        if let Some(s) = lanes::igt_summary(&d.log) {
            eprintln!("igt ({}): {s}", d.what);
        }
    }
    eprintln!(
        "vm-tests (all runs): {} passed, {} failed, {} missing, {} skipped",
        all.passed, all.failed, all.missing, all.skipped
    );
    let failed: Vec<String> = done
        .iter()
        .filter_map(|d| d.ok.as_ref().err().map(|e| format!("{}: {e}", d.what)))
        .collect();
    if !failed.is_empty() {
        p.report();
        eprintln!("xtask: VM runs failed:\n  {}", failed.join("\n  "));
        exit(1);
    }
}

/// How a lane's VM run boots: `bins`, only these test binaries
/// (`GVT_VM_BINS`); the L1 kernel; the run's time limit (`GVT_VM_TIMEOUT`).
struct RunHow<'a> {
    bins: Option<&'a str>,
    kernel: Kernel,
    timeout_s: Option<u64>,
    /// The rig self-check's switches, for the first run only (a retry runs
    /// as the lanes' runs do).
    first_env: &'a [(&'a str, &'a str)],
    /// How many more times a run that hung may run what it left.
    hang_retries: u32,
}

/// How many times a lane's run that hung runs its unfinished tests again.
const HANG_RETRIES: u32 = 2;

/// One VM run in its own directory (`GVT_VM_DIR`: its log and list of tests),
/// its output captured.  A run that tools/vm-run.sh's watchdog stopped as
/// hung, and that failed for nothing else, runs the tests it never finished
/// again in a new VM (in `DIR/retry`, then `DIR/retry/retry`), up to
/// `how.hang_retries` times (every caller: [`HANG_RETRIES`]); the verdict is then each test's last result, and
/// the log says so.  L1 runs under TCG here, and TCG's emulated SVM can
/// wedge L1 for good while a nested guest runs (the IGT run's VM: 5 of 7 on
/// the rig's machine in sessions 12-13, always silent, never a splat): that
/// is the machine's, not a test's; a test that hangs its VM three times
/// fails.
///
/// Leaves `results.merged` in `dir` (each test's last result over this run
/// and its retries).
fn lane_vm_run(
    initrd: &Path,
    tests: &[PathBuf],
    filter: &str,
    dir: &Path,
    files: &Path,
    how: RunHow,
) -> (Result<(), String>, String) {
    let (ok, log) = lane_vm_run_once(initrd, tests, filter, dir, files, &how);
    // tools/common.sh: a distro-kernel run keeps its files (results, the
    // watchdog's `hung`) in DIR/distro; the list of tests is xtask's, in DIR.
    let vdir = match how.kernel {
        Kernel::Distro => dir.join("distro"),
        Kernel::Debian => dir.to_path_buf(),
    };
    let merged = dir.join("results.merged");
    let _ = fs::copy(vdir.join("results"), &merged);
    if ok.is_ok() || how.hang_retries == 0 {
        return (ok, log);
    }
    let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
    let first = fs::read_to_string(vdir.join("results")).unwrap_or_default();
    let expected = read("expected.txt");
    let Some(left) =
        lanes::unfinished_after_hang(vdir.join("hung").exists(), &log, &first, &expected)
    else {
        return (ok, log);
    };
    // Only the unfinished tests, by their exact names when those select no
    // other test; else their binaries whole, with the run's own filter.
    let left_bins: Vec<&str> = {
        let mut b: Vec<&str> = left.iter().map(|(b, _)| b.as_str()).collect();
        b.dedup();
        b
    };
    let retry_tests: Vec<PathBuf> = tests
        .iter()
        .filter(|t| left_bins.contains(&guest_name(t).as_str()))
        .cloned()
        .collect();
    let names = left
        .iter()
        .map(|(_, t)| t.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let exact = names.len() <= 900 && {
        let mut got = Vec::new();
        for t in &retry_tests {
            for n in list_tests(t, &names).unwrap_or_default() {
                got.push((guest_name(t), n));
            }
        }
        got.sort();
        let mut want = left.clone();
        want.sort();
        got == want
    };
    let retry_filter = if exact { names.as_str() } else { filter };
    let bins = left_bins.join(",");
    let banner = format!(
        "vm: the VM hung ({}); {} unfinished tests of {} run again in a new VM{}",
        fs::read_to_string(vdir.join("hung"))
            .unwrap_or_default()
            .trim(),
        left.len(),
        bins,
        if exact { "" } else { " (their binaries whole)" }
    );
    let rdir = dir.join("retry");
    let _ = fs::remove_dir_all(&rdir);
    eprintln!("{banner}");
    let (rok, rlog) = lane_vm_run(
        initrd,
        &retry_tests,
        retry_filter,
        &rdir,
        files,
        RunHow {
            bins: Some(&bins),
            first_env: &[],
            hang_retries: how.hang_retries - 1,
            ..how
        },
    );
    let rresults = fs::read_to_string(rdir.join("results.merged")).unwrap_or_default();
    let _ = fs::write(&merged, lanes::merge_results(&first, &rresults));
    let t = lanes::tally_after_retry(&expected, &first, &rresults);
    let verdict = if rok.is_ok() && t.failed == 0 && t.missing == 0 {
        Ok(())
    } else {
        Err(format!(
            "the VM hung, and the retry of its unfinished tests failed too ({})",
            rok.err().unwrap_or_else(|| "see its log".into())
        ))
    };
    let log = format!(
        "{log}\n{banner}\n{rlog}\n{t} ({} listed on the host; a hung VM's {} unfinished tests ran again)\n",
        expected.lines().count(),
        left.len()
    );
    (verdict, log)
}

fn lane_vm_run_once(
    initrd: &Path,
    tests: &[PathBuf],
    filter: &str,
    dir: &Path,
    files: &Path,
    how: &RunHow,
) -> (Result<(), String>, String) {
    let &RunHow {
        bins,
        kernel,
        timeout_s,
        first_env,
        hang_retries: _,
    } = how;
    if let Err(e) = fs::create_dir_all(dir) {
        return (Err(format!("{}: {e}", dir.display())), String::new());
    }
    let mut c = match vm_command_expect(initrd, tests, filter, &dir.join("expected.txt")) {
        Ok(c) => c,
        Err(e) => return (Err(e.clone()), e),
    };
    c.env("GVT_VM_DIR", dir)
        .env("GVT_VM_FILES", files)
        .env("GVT_KERNEL", kernel.name());
    if let Some(b) = bins {
        c.env("GVT_VM_BINS", b);
    }
    if let Some(t) = timeout_s {
        c.env("GVT_VM_TIMEOUT", t.to_string());
    }
    c.envs(first_env.iter().copied());
    // stdout and stderr into one file, in the order they were written.
    let path = dir.join("run.log");
    let opened = fs::File::create(&path).and_then(|f| Ok((f.try_clone()?, f)));
    let (out, err) = match opened {
        Ok(f) => f,
        Err(e) => return (Err(format!("{}: {e}", path.display())), String::new()),
    };
    let st = c.stdout(out).stderr(err).status();
    let log = fs::read(&path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    match st {
        Ok(st) if st.success() => (Ok(()), log),
        Ok(st) => (Err(format!("tools/vm-run.sh exited with {st}")), log),
        Err(e) => (Err(format!("vm-run.sh: {e}")), log),
    }
}

/// The tests of one guest test binary that a run with `filter` selects.
fn list_tests(bin: &Path, filter: &str) -> Result<Vec<String>, String> {
    let o = Command::new(bin)
        .args(selection(filter))
        .arg("--list")
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if !o.status.success() {
        return Err(format!(
            "{} --list exited with {}:\n{}",
            bin.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(String::from)
        .collect())
}

fn host_tests(p: &mut Phases) {
    p.run("host: cargo test --workspace", || {
        sh(cargo().args(["test", "--workspace"]))
    });
    // The benchmarks are built (not run: `cargo xtask bench` runs them) so
    // they cannot rot unnoticed.
    p.run("host: benchmarks compile (cargo bench --no-run)", || {
        sh(cargo().args([
            "bench",
            "-p",
            "gvt-core",
            "--features",
            "fakes",
            "--benches",
            "--no-run",
        ]))
    });
    p.run("host: gvt-core with the kernel's rustc", || {
        sh(&mut tool("check-core-msrv.sh"))
    });
    p.run("host: fuzz submission and resume (30 s)", || {
        let mut c = Command::new("bash");
        c.arg(repo().join("driver/core/fuzz/run-fuzz.sh")).arg("30");
        sh(&mut c)
    });
}

/// `cargo xtask lint`: what a reviewer would otherwise check by hand.
fn lint(p: &mut Phases) {
    // A fresh machine's toolchain may lack them (rustup's minimal profile).
    p.run("lint: rustfmt and clippy present", || {
        let have = |c: &str| {
            cargo()
                .args([c, "--version"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if have("fmt") && have("clippy") {
            return Ok(());
        }
        sh(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))
    });
    p.run("lint: import circles (core, module)", || {
        let houses = [
            graph::House {
                name: "driver/core",
                dir: repo().join("driver/core/src"),
                root: "lib.rs",
            },
            graph::House {
                name: "driver/kmod",
                dir: repo().join("driver/kmod"),
                root: "gvt_rs_main.rs",
            },
        ];
        let mut errs = String::new();
        for h in &houses {
            match graph::check(h) {
                Ok(n) => eprintln!("lint: {}: {n} modules, no import circle", h.name),
                Err(e) => errs.push_str(&e),
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    });
    p.run("lint: the core's facade takes one list of services", || {
        let n = graph::facade(&repo().join("driver/core/src/vgpu.rs"), "Vgpu")?;
        eprintln!("lint: gvt_core::vgpu::Vgpu: {n} methods, none with more than one generic list of services");
        Ok(())
    });
    p.run("lint: cargo fmt --check", || {
        sh(cargo().args(["fmt", "--all", "--check"]))
    });
    // The module's files are not a cargo crate: rustfmt itself, same settings.
    p.run("lint: rustfmt --check driver/kmod guest-kmod", || {
        let mut c = Command::new("rustfmt");
        c.args(["--check", "--edition", "2021", "--config-path"])
            .arg(repo().join("rustfmt.toml"));
        for dir in ["driver/kmod", "guest-kmod"] {
            for e in fs::read_dir(repo().join(dir)).map_err(|e| format!("{dir}: {e}"))? {
                let path = e.map_err(|e| format!("{dir}: {e}"))?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.ends_with(".rs") && !name.ends_with("_generated.rs") {
                    c.arg(&path);
                }
            }
        }
        sh(&mut c)
    });
    p.run("lint: clippy -D warnings", || {
        sh(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    });
}

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let mut p = Phases { done: Vec::new() };
    match args.first().map(String::as_str) {
        Some("setup") => {
            setup(&mut p, true, false);
        }
        Some("kmod") => {
            setup(&mut p, false, false);
            p.run("kmod: build modules", || sh(&mut tool("build-modules.sh")));
        }
        Some("vm-test") => {
            let (kernel, filter) = match (args.get(1).map(String::as_str), args.get(2)) {
                (Some("--kernel"), Some(k)) => (Some(k.as_str()), args.get(3)),
                (Some(a), _) if a.starts_with("--kernel=") => {
                    (a.strip_prefix("--kernel="), args.get(2))
                }
                (_, _) => (None, args.get(1)),
            };
            let filter = filter.map(String::as_str).unwrap_or("");
            match kernel {
                None | Some("debian") => {
                    // Without a filter: every run `test` makes, the distro
                    // kernel's too.
                    setup(
                        &mut p,
                        filter.is_empty(),
                        filter.is_empty() || filter.contains("igt"),
                    );
                    p.run("kmod: build modules", || sh(&mut tool("build-modules.sh")));
                    if filter.is_empty() {
                        // No filter: every VM run of `cargo xtask test`, in lanes.
                        vm_test_lanes(&mut p);
                    } else {
                        vm_run(&mut p, filter, "vm: tests");
                    }
                }
                Some("distro") => {
                    setup(&mut p, true, false);
                    distro_run(&mut p, filter);
                }
                Some(other) => {
                    eprintln!("xtask: vm-test --kernel: 'debian' or 'distro', not '{other}'");
                    exit(2);
                }
            }
        }
        Some("demo") => {
            setup(&mut p, false, false);
            p.run("kmod: build modules", || sh(&mut tool("build-modules.sh")));
            // The demo exports the nested QEMU's screendump of the vGPU
            // (a PNG); tools/vm-run.sh decodes it here.
            let out = repo().join("target").join("gvt-demo");
            // The two screens the demo exports: the reference guest
            // driver's blitted picture, and the native driver's console.
            let shots = [
                (
                    "screen.png",
                    "the vGPU's screen as the nested QEMU showed it",
                ),
                (
                    "console.png",
                    "the guest's console on the vGPU (native driver gvt_drm, fbcon)",
                ),
            ];
            for (f, _) in shots {
                let _ = fs::remove_file(out.join(f));
            }
            env::set_var("GVT_VM_FILES", &out);
            vm_run(&mut p, "demo", "vm: demo");
            p.run("demo: the vGPU's screens", || {
                for (f, what) in shots {
                    let png = out.join(f);
                    let n = fs::metadata(&png)
                        .map_err(|e| format!("{}: {e}", png.display()))?
                        .len();
                    let shown = png.strip_prefix(repo()).unwrap_or(&png);
                    eprintln!(
                        "demo: {what} (QMP screendump, PNG, {n} bytes): {}",
                        shown.display()
                    );
                }
                Ok(())
            });
        }
        Some("test") => {
            lint(&mut p);
            setup(&mut p, true, true);
            host_tests(&mut p);
            p.run("kmod: build modules", || sh(&mut tool("build-modules.sh")));
            vm_test_lanes(&mut p);
        }
        Some("self-check") => {
            setup(&mut p, false, false);
            p.run("kmod: build modules", || sh(&mut tool("build-modules.sh")));
            let mut bins = GuestBinaries {
                tests: Vec::new(),
                programs: Vec::new(),
            };
            p.run("build: static guest binaries", || {
                bins = build_guest_binaries()?;
                Ok(())
            });
            let initrd = vm_initrd(&mut p, &bins);
            p.run(
                "vm: rig self-check (6 runs: 5 must fail, a hung one be retried)",
                || rig_self_check(&initrd, &bins.tests),
            );
        }
        Some("bench") => {
            p.run("host: gvt-core benchmarks", || {
                sh(cargo().args(["bench", "-p", "gvt-core", "--features", "fakes"]))
            });
            setup(&mut p, false, false);
            p.run("kmod: build modules", || sh(&mut tool("build-modules.sh")));
            vm_run(&mut p, "bench_", "vm: benchmarks");
        }
        Some("lint") => {
            lint(&mut p);
            p.run("lint: gvt-core with the kernel's rustc", || {
                sh(&mut tool("check-core-msrv.sh"))
            });
        }
        Some("lint-core") => p.run("gvt-core with the kernel's rustc", || {
            sh(&mut tool("check-core-msrv.sh"))
        }),
        Some("fuzz") => {
            let secs = match args.get(1).map(String::as_str) {
                None => 600,
                Some("--seconds") => match args
                    .get(2)
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|n| *n > 0)
                {
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
            p.run(
                &format!("host: fuzz submission and resume ({secs} s)"),
                || {
                    let mut c = Command::new("bash");
                    c.arg(repo().join("driver/core/fuzz/run-fuzz.sh"))
                        .arg(secs.to_string());
                    sh(&mut c)
                },
            );
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
