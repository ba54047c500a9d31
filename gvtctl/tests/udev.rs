//! The udev rules: their syntax (udevadm) and the commands they run, executed against the
//! simulated tree exactly as written in the rules files.

mod common;

use common::*;
use std::path::PathBuf;

fn udev_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../udev")
}

/// The RUN+= / PROGRAM== values of a rules file (comments skipped).
fn rule_values(file: &str, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(udev_dir().join(file)).expect("rules file");
    let pat = format!("{key}\"");
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(i) = rest.find(&pat) {
            let after = &rest[i + pat.len()..];
            let end = after.find('"').expect("closing quote");
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

/// Turn a rule's command into argv: the installed binary path becomes the built one,
/// udev's $kernel / %k become the device name.
fn argv(cmd: &str, kernel: &str) -> Vec<String> {
    cmd.split_whitespace()
        .map(|w| w.replace("$kernel", kernel).replace("%k", kernel))
        .collect()
}

fn run_rule(t: &Tree, cmd: &str, kernel: &str) -> std::process::Output {
    run_rule_env(t, cmd, kernel, &[])
}

fn run_rule_env(
    t: &Tree,
    cmd: &str,
    kernel: &str,
    env: &[(&str, &std::ffi::OsStr)],
) -> std::process::Output {
    let a = argv(cmd, kernel);
    assert_eq!(a[0], "/usr/bin/gvtctl", "rules run the installed gvtctl");
    let mut c = assert_cmd::Command::cargo_bin("gvtctl").unwrap();
    // The rule has no --root: GVTCTL_ROOT points it at the simulated tree.
    c.env("GVTCTL_ROOT", t.root())
        // Never the host's /dev/log or kernel log from a test: a socket that is not there.
        .env("GVTCTL_SYSLOG", t.p("no-syslog"))
        .envs(env.iter().copied())
        .args(&a[1..])
        .output()
        .expect("run")
}

#[test]
fn autostart_rule_starts_auto_definitions_of_the_parent() {
    let runs = rule_values("60-gvt-rs-autostart.rules", "RUN+=");
    assert_eq!(
        runs.len(),
        4,
        "change (MDEV_STATE=registered) and add, for gvt-sim* and for PCI functions"
    );
    let rules = std::fs::read_to_string(udev_dir().join("60-gvt-rs-autostart.rules")).unwrap();
    assert!(rules.contains(r#"ACTION=="change", ENV{MDEV_STATE}=="registered""#));
    assert!(rules.contains(r#"TEST=="/etc/mdevctl.d/$kernel""#));
    for cmd in &runs {
        let t = all();
        t.cmd()
            .args(["define", U1, "--type", "gvt_rs-GVTsim_64M", "--auto"])
            .assert()
            .success();
        t.cmd()
            .args(["define", U2, "--type", "gvt_rs-GVTsim_128M"])
            .assert()
            .success();
        t.cmd()
            .args(["define", U3, "--type", "mtty-1", "--auto"])
            .assert()
            .success();
        // What udev discards reaches the system log (a socket of ours standing for
        // /dev/log): one record per line, facility user, severity info.
        let log = t.p("log.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&log).unwrap();
        sock.set_nonblocking(true).unwrap();
        let out = run_rule_env(&t, cmd, "gvt-sim0", &[("GVTCTL_SYSLOG", log.as_os_str())]);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(t.dev(U1).exists(), "auto definition started");
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a syslog record");
        let rec = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            rec.starts_with("<14>gvtctl[")
                && rec.contains(&format!("]: started {U1} (gvt_rs-GVTsim_64M on gvt-sim0)")),
            "{rec}"
        );
        assert!(!t.dev(U2).exists(), "manual definition left alone");
        assert!(!t.dev(U3).exists(), "other parent's definitions left alone");
        // The parent re-registering (module reload) runs it again: idempotent.
        let out = run_rule(&t, cmd, "gvt-sim0");
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("already active"));
    }
}

/// A PCI-function parent (`0000:00:04.0` bound to gvt_rs): its rules match the
/// function's driver, and their command starts that parent's definitions only.
#[test]
fn autostart_rule_for_a_pci_parent() {
    const BDF: &str = "0000:00:04.0";
    let text = std::fs::read_to_string(udev_dir().join("60-gvt-rs-autostart.rules")).unwrap();
    let pci: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(r#"SUBSYSTEM=="pci""#))
        .collect();
    assert_eq!(pci.len(), 2, "{pci:?}");
    for l in &pci {
        assert!(l.contains(r#"DRIVER=="gvt_rs""#), "{l}");
        assert!(l.contains(r#"TEST=="/etc/mdevctl.d/$kernel""#), "{l}");
    }
    assert!(pci[0].contains(r#"ACTION=="change", ENV{MDEV_STATE}=="registered""#));
    assert!(pci[1].contains(r#"ACTION=="add""#));
    let cmd = &rule_values("60-gvt-rs-autostart.rules", "RUN+=")[2];
    let t = Tree::new(&[
        libgvtctl::fake_sysfs::Fixture::GvtRs,
        libgvtctl::fake_sysfs::Fixture::GvtRsPci,
    ]);
    t.cmd()
        .args(["define", U1, "--parent", BDF, "--aperture", "64M", "--auto"])
        .assert()
        .success();
    t.cmd()
        .args([
            "define",
            U2,
            "--parent",
            "gvt-sim0",
            "--aperture",
            "64M",
            "--auto",
        ])
        .assert()
        .success();
    assert!(t.p(&format!("etc/mdevctl.d/{BDF}/{U1}")).is_file());
    let out = run_rule(&t, cmd, BDF);
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let canon = std::fs::canonicalize(t.dev(U1)).expect("started");
    assert!(canon.ends_with(format!("sys/devices/pci0000:00/{BDF}/{U1}")));
    assert!(
        !t.dev(U2).exists(),
        "the virtual parent's definitions left alone"
    );
}

#[test]
fn autostart_after_module_reload() {
    // Simulate "vGPUs lost after reboot": devices gone, definitions remain, parent returns.
    let t = gvt();
    let a = t.create(&["--aperture", "64M", "--define", "--weight", "7"]);
    let b = t.create(&["--aperture", "128M"]);
    t.cmd().args(["destroy", &a]).assert().success();
    t.cmd().args(["destroy", &b]).assert().success();
    let cmd = &rule_values("60-gvt-rs-autostart.rules", "RUN+=")[0];
    let out = run_rule(&t, cmd, "gvt-sim0");
    assert!(out.status.success());
    assert!(t.dev(&a).exists(), "defined vGPU is back");
    assert_eq!(
        std::fs::read_to_string(t.dev(&a).join("gvt/weight"))
            .unwrap()
            .trim(),
        "7"
    );
    assert!(!t.dev(&b).exists(), "transient vGPU stays gone");
}

#[test]
fn vfio_rule_program_matches_gvt_rs_groups_only() {
    let progs = rule_values("70-gvt-rs-vfio.rules", "PROGRAM==");
    assert_eq!(progs.len(), 1);
    let rules = std::fs::read_to_string(udev_dir().join("70-gvt-rs-vfio.rules")).unwrap();
    assert!(rules.contains(r#"GROUP="$env{GVT_RS_VFIO_GROUP}""#));
    assert!(rules.contains(r#"ENV{GVT_RS_VFIO_GROUP}=="", ENV{GVT_RS_VFIO_GROUP}="kvm""#));
    let t = all();
    let a = t.create(&["--aperture", "64M"]);
    let i = t.create(&["--type", "i915-GVTg_V5_8"]);
    let m = t.create(&["--type", "mtty-1"]);
    let out = run_rule(&t, &progs[0], &t.group_of(&a));
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), a);
    assert!(!run_rule(&t, &progs[0], &t.group_of(&i)).status.success());
    assert!(!run_rule(&t, &progs[0], &t.group_of(&m)).status.success());
}

#[test]
fn rules_syntax_with_udevadm() {
    let script = udev_dir().join("check-rules.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .expect("bash");
    let err = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => eprintln!("{}", String::from_utf8_lossy(&out.stdout)),
        Some(77) => eprintln!("udev rule syntax NOT verified: {err}"),
        _ => panic!(
            "udev rules rejected:\n{}\n{err}",
            String::from_utf8_lossy(&out.stdout)
        ),
    }
}
