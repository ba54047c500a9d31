//! No panics on any input: odd arguments and damaged or foreign sysfs trees give errors
//! (documented exit codes), never a crash (exit 101).

mod common;

use common::*;
use std::os::unix::fs::symlink;

fn no_panic(t: &Tree, args: &[&str]) {
    for json in [false, true] {
        let mut c = t.cmd();
        if json {
            c.arg("--json");
        }
        let out = c.args(args).output().expect("run");
        let code = out.status.code().unwrap_or(-1);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!((0..=8).contains(&code), "{args:?} exited {code}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        if json && !out.stdout.is_empty() {
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .unwrap_or_else(|e| panic!("{args:?}: stdout not JSON: {e}"));
        }
    }
}

const COMMANDS: &[&[&str]] = &[
    &["types"],
    &["list"],
    &["info", U1],
    &["create", "--aperture", "64M"],
    &["create", "--type", "mtty-1"],
    &["start", "--auto"],
    &["destroy", U1],
    &["vmm-args", U1],
];

#[test]
fn odd_arguments() {
    let t = gvt();
    for args in [
        &["create", "--aperture", "0"][..],
        &["create", "--aperture", "18446744073709551615"],
        &[
            "create",
            "--aperture",
            "0xffffffffffffffff",
            "--high-gm",
            "0x0",
        ],
        &["create", "--aperture", "64M", "--fences", "4294967295"],
        &["create", "--aperture", "\u{1F600}"],
        &["create", "--type", "../../../../etc"],
        &["create", "--parent", "../..", "--aperture", "64M"],
        &[
            "create",
            "--aperture",
            "64M",
            "--uuid",
            "00000000-0000-0000-0000-00000000000\u{e9}",
        ],
        &["info", ""],
        &["info", "../../../x"],
        &["destroy", "83b8f4f2-509f-382f-3c1e-e6bfe0fa10010"],
        &["define", "--parent", "", "--type", ""],
        &["undefine", U1, "--parent", "../../.."],
        &["start", U1, "--parent", "/"],
        &["udev-match-group", ""],
        &["--timeout", "1e308", "list"],
        &["--timeout", "NaN", "list"],
    ] {
        no_panic(&t, args);
    }
}

#[test]
fn damaged_and_foreign_trees() {
    let t = all();
    let a = t.create(&["--aperture", "64M", "--uuid", U1]);
    let types = t.p("sys/class/mdev_bus/gvt-sim0/mdev_supported_types");
    // Garbage attributes, a type with nothing in it, binary descriptions.
    std::fs::write(
        types.join("gvt_rs-GVTsim_64M/available_instances"),
        "lots\n",
    )
    .unwrap();
    std::fs::write(
        types.join("gvt_rs-GVTsim_128M/description"),
        [0xffu8, 0xfe, 0, 10],
    )
    .unwrap();
    std::fs::write(
        types.join("gvt_rs-GVTsim_256M/description"),
        "low_gm_size: 99999999999999999999MB\nfence: -1\n",
    )
    .unwrap();
    std::fs::create_dir_all(types.join("vendor-empty")).unwrap();
    std::fs::write(types.join("i915-notadir"), "").unwrap();
    // Broken links and junk in the device and bus directories.
    symlink(
        "/nonexistent",
        t.p("sys/bus/mdev/devices/83b8f4f2-509f-382f-3c1e-e6bfe0fa1009"),
    )
    .unwrap();
    std::fs::write(t.p("sys/bus/mdev/devices/not-a-uuid"), "").unwrap();
    std::fs::write(t.dev(&a).join("gvt/extra_stat"), "garbage \u{0}\n").unwrap();
    std::fs::remove_file(t.dev(&a).join("iommu_group")).unwrap();
    symlink("../../no/such/group", t.dev(&a).join("iommu_group")).unwrap();
    // A parent without types, a non-directory in mdev_bus.
    std::fs::create_dir_all(t.p("sys/devices/virtual/odd/odd0")).unwrap();
    symlink(
        "../../devices/virtual/odd/odd0",
        t.p("sys/class/mdev_bus/odd0"),
    )
    .unwrap();
    std::fs::write(t.p("sys/class/mdev_bus/file"), "").unwrap();
    // /proc noise, definitions junk.
    std::fs::create_dir_all(t.p("proc/self/fd")).unwrap();
    std::fs::create_dir_all(t.p("proc/123")).unwrap();
    std::fs::write(t.p("proc/124"), "").unwrap();
    std::fs::create_dir_all(t.p("etc/mdevctl.d/gvt-sim0")).unwrap();
    std::fs::write(
        t.p(&format!("etc/mdevctl.d/gvt-sim0/{U2}")),
        r#"{"mdev_type": 5, "start": []}"#,
    )
    .unwrap();
    std::fs::write(t.p(&format!("etc/mdevctl.d/gvt-sim0/{U3}")), [0xffu8; 8]).unwrap();
    std::fs::write(t.p("etc/mdevctl.d/stray-file"), "").unwrap();
    // Unknown attributes (future stats) are shown as they are; a broken group link is "none".
    let (code, v) = t.json(&["info", U1]);
    assert_eq!(code, 0);
    assert_eq!(v["gvt"]["extra_stat"], "garbage \u{0}");
    assert!(v["iommu_group"].is_null());
    for args in COMMANDS {
        no_panic(&t, args);
    }
    // Names never escape their directories.
    t.cmd()
        .args(["define", U2, "--parent", "../../tmp", "--type", "x"])
        .assert()
        .code(2);
    t.cmd()
        .args(["define", U2, "--parent", "gvt-sim0", "--type", "../x"])
        .assert()
        .code(2);
    no_panic(&t, &["start", U2, "--parent", "gvt-sim0"]);
    no_panic(&t, &["start", U3, "--parent", "gvt-sim0"]);
    no_panic(&t, &["info", "83b8f4f2-509f-382f-3c1e-e6bfe0fa1009"]);
    no_panic(&t, &["destroy", "83b8f4f2-509f-382f-3c1e-e6bfe0fa1009"]);
    // The damaged type reads as "unknown count", the free-text one as no partition.
    std::fs::write(
        types.join("gvt_rs-GVTsim_64M/available_instances"),
        "lots\n",
    )
    .unwrap();
    let (_, v) = t.json(&["types", "--parent", "gvt-sim0"]);
    let ty = v["types"].as_array().unwrap();
    let x = ty.iter().find(|x| x["id"] == "gvt_rs-GVTsim_64M").unwrap();
    assert!(x["available_instances"].is_null());
    let x = ty.iter().find(|x| x["id"] == "gvt_rs-GVTsim_256M").unwrap();
    assert!(x["partition"].is_null());
}

#[test]
fn empty_and_missing_roots() {
    let t = Tree::new(&[]);
    for args in COMMANDS {
        no_panic(&t, args);
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    for args in COMMANDS {
        let out = assert_cmd::Command::cargo_bin("gvtctl")
            .unwrap()
            .arg("--root")
            .arg(&missing)
            .args(*args)
            .output()
            .unwrap();
        let code = out.status.code().unwrap_or(-1);
        assert!((0..=8).contains(&code), "{args:?}: {code}");
    }
}

/// `U=$(gvtctl create ... | head -n1)` (the README's idiom) closes the pipe after the
/// first line: the rest of the output hits EPIPE, which must not become a panic.
#[test]
fn closed_stdout_is_not_a_panic() {
    let t = gvt();
    let bin = assert_cmd::cargo::cargo_bin("gvtctl");
    for args in [
        "create --aperture 64M",
        "--json list",
        "types",
        "completions bash",
        "--help",
    ] {
        // The reader (`true`) is gone before gvtctl writes anything.
        let script = format!(
            "(sleep 0.3; '{}' --root '{}' {args} 2>'{}/err'; echo $? >'{}/rc') | true",
            bin.display(),
            t.root().display(),
            t.root().display(),
            t.root().display()
        );
        let st = std::process::Command::new("sh")
            .args(["-c", &script])
            .status()
            .expect("sh");
        assert!(st.success());
        let rc = std::fs::read_to_string(t.p("rc")).expect("rc");
        let err = std::fs::read_to_string(t.p("err")).expect("err");
        assert_eq!(rc.trim(), "0", "{args}: {err}");
        assert!(!err.contains("panicked"), "{args}: {err}");
    }
    assert_eq!(
        t.avail("gvt-sim0", "gvt_rs-GVTsim_64M"),
        3,
        "create did its work"
    );
}
