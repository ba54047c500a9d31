//! Definitions in the directory mdevctl shares: atomic writes, damaged files skipped and
//! reported, `define --jsonfile`, `modify --attr [--live]`, and logging with RUST_LOG.

mod common;

use common::*;
use predicates::str::contains;
use std::os::unix::fs::PermissionsExt;

fn def_path(t: &Tree, parent: &str, uuid: &str) -> std::path::PathBuf {
    t.p(&format!("etc/mdevctl.d/{parent}/{uuid}"))
}

#[test]
fn definitions_are_written_whole_with_mdevctls_mode_and_no_leftovers() {
    let t = gvt();
    t.cmd()
        .args(["define", U1, "--type", "gvt_rs-GVTsim_64M", "--weight", "8"])
        .assert()
        .success();
    t.cmd().args(["autostart", U1, "on"]).assert().success();
    let p = def_path(&t, "gvt-sim0", U1);
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "{\n  \"mdev_type\": \"gvt_rs-GVTsim_64M\",\n  \"start\": \"auto\",\n  \"attrs\": [\n    {\n      \"gvt/weight\": \"8\"\n    }\n  ]\n}"
    );
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let names: Vec<String> = std::fs::read_dir(p.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![U1.to_string()], "no temporary file left behind");
}

#[test]
fn damaged_definitions_are_reported_and_skipped() {
    let t = gvt();
    t.cmd()
        .args(["define", U1, "--type", "gvt_rs-GVTsim_64M"])
        .assert()
        .success();
    // An empty file (what a non-atomic writer leaves after a crash) and a truncated one.
    std::fs::write(def_path(&t, "gvt-sim0", U2), "").unwrap();
    std::fs::write(
        def_path(&t, "gvt-sim0", U3),
        "{\n  \"mdev_type\": \"gvt_rs-GVT",
    )
    .unwrap();
    t.cmd()
        .args(["list", "--defined"])
        .assert()
        .success()
        .stdout(contains(U1))
        .stderr(contains(format!(
            "skipping damaged definition /etc/mdevctl.d/gvt-sim0/{U2}: empty file"
        )))
        .stderr(contains(format!(
            "/etc/mdevctl.d/gvt-sim0/{U3}: not an mdevctl definition"
        )));
    let (code, v) = t.json(&["list"]);
    assert_eq!(code, 0);
    assert_eq!(v["instances"].as_array().unwrap().len(), 1);
    let damaged = v["damaged_definitions"].as_array().unwrap();
    assert_eq!(damaged.len(), 2, "{v:#}");
    assert_eq!(damaged[0]["path"], format!("/etc/mdevctl.d/gvt-sim0/{U2}"));
    assert_eq!(damaged[0]["reason"], "empty file");
    // RUST_LOG silences the warning (env_logger), -v cannot bring it back above error.
    t.cmd()
        .env("RUST_LOG", "error")
        .args(["list"])
        .assert()
        .success()
        .stderr("");
}

#[test]
fn logging_follows_rust_log_and_verbose() {
    let t = gvt();
    t.cmd()
        .args(["create", "--aperture", "64M"])
        .assert()
        .success()
        .stderr("");
    t.cmd()
        .args(["-v", "create", "--aperture", "64M"])
        .assert()
        .success()
        .stderr(contains("gvtctl: info: creating "));
    t.cmd()
        .env("RUST_LOG", "info")
        .args(["create", "--aperture", "32M"])
        .assert()
        .success()
        .stderr(contains("gvtctl: info: creating "));
}

#[test]
fn define_from_an_mdevctl_json_file() {
    let t = gvt();
    let f = t.p("vgpu.json");
    // What `mdevctl define --jsonfile` takes (and `mdevctl list --dumpjson` prints).
    let body = "{\n  \"mdev_type\": \"gvt_rs-GVTsim_32M\",\n  \"start\": \"auto\",\n  \"attrs\": [\n    {\n      \"gvt/weight\": \"3\"\n    },\n    {\n      \"gvt/dmabuf\": \"0\"\n    }\n  ]\n}";
    std::fs::write(&f, body).unwrap();
    let (code, v) = t.json(&[
        "define",
        U1,
        "--parent",
        "gvt-sim0",
        "--jsonfile",
        f.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["definition"]["start"], "auto");
    // Written byte for byte as mdevctl writes it.
    assert_eq!(
        std::fs::read_to_string(def_path(&t, "gvt-sim0", U1)).unwrap(),
        body
    );
    // And started with its attributes.
    t.cmd().args(["start", "--auto"]).assert().success();
    assert_eq!(
        std::fs::read_to_string(t.dev(U1).join("gvt/weight"))
            .unwrap()
            .trim(),
        "3"
    );
    assert_eq!(
        std::fs::read_to_string(t.dev(U1).join("gvt/dmabuf"))
            .unwrap()
            .trim(),
        "0"
    );
    // An active UUID gives the parent.
    std::fs::write(
        &f,
        r#"{"mdev_type": "gvt_rs-GVTsim_32M", "start": "manual"}"#,
    )
    .unwrap();
    t.cmd().args(["undefine", U1]).assert().success();
    t.cmd()
        .args(["define", U1, "--jsonfile", f.to_str().unwrap()])
        .assert()
        .success();
    // Refusals.
    let js = f.to_str().unwrap();
    t.cmd()
        .args(["define", U2, "--jsonfile", js])
        .assert()
        .code(2)
        .stderr(contains("--jsonfile needs --parent"));
    t.cmd()
        .args([
            "define",
            U2,
            "--jsonfile",
            js,
            "--type",
            "gvt_rs-GVTsim_32M",
        ])
        .assert()
        .code(2);
    std::fs::write(
        &f,
        r#"{"mdev_type": "gvt_rs-GVTsim_1T", "start": "manual"}"#,
    )
    .unwrap();
    t.cmd()
        .args(["define", U2, "--parent", "gvt-sim0", "--jsonfile", js])
        .assert()
        .code(3)
        .stderr(contains("gvt_rs-GVTsim_1T"));
    std::fs::write(
        &f,
        r#"{"mdev_type": "t", "start": "manual", "attrs": [{"remove": "1"}]}"#,
    )
    .unwrap();
    t.cmd()
        .args(["define", U2, "--parent", "gvt-sim0", "--jsonfile", js])
        .assert()
        .code(1)
        .stderr(contains("control file"));
    std::fs::write(
        &f,
        r#"{"mdev_type": "t", "start": "manual", "attrs": [{"../../x": "1"}]}"#,
    )
    .unwrap();
    t.cmd()
        .args(["define", U2, "--parent", "gvt-sim0", "--jsonfile", js])
        .assert()
        .code(1)
        .stderr(contains("inside the device directory"));
    std::fs::write(&f, "").unwrap();
    t.cmd()
        .args(["define", U2, "--parent", "gvt-sim0", "--jsonfile", js])
        .assert()
        .code(1)
        .stderr(contains("empty file"));
    t.cmd()
        .args([
            "define",
            U2,
            "--parent",
            "gvt-sim0",
            "--jsonfile",
            "/nonexistent/x.json",
        ])
        .assert()
        .code(1);
    assert!(!def_path(&t, "gvt-sim0", U2).exists());
}

#[test]
fn modify_sets_generic_attributes_and_start_mode() {
    let t = gvt();
    t.cmd()
        .args(["define", U1, "--type", "gvt_rs-GVTsim_64M", "--weight", "8"])
        .assert()
        .success();
    let (code, v) = t.json(&[
        "modify",
        U1,
        "--attr",
        "gvt/dmabuf=0",
        "--attr",
        "gvt/weight=2",
        "--auto",
    ]);
    assert_eq!(code, 0, "{v:#}");
    // The existing key keeps its place, the new one is appended.
    assert_eq!(
        std::fs::read_to_string(def_path(&t, "gvt-sim0", U1)).unwrap(),
        "{\n  \"mdev_type\": \"gvt_rs-GVTsim_64M\",\n  \"start\": \"auto\",\n  \"attrs\": [\n    {\n      \"gvt/weight\": \"2\"\n    },\n    {\n      \"gvt/dmabuf\": \"0\"\n    }\n  ]\n}"
    );
    t.cmd().args(["modify", U1, "--manual"]).assert().success();
    assert!(std::fs::read_to_string(def_path(&t, "gvt-sim0", U1))
        .unwrap()
        .contains("\"start\": \"manual\""));
    for (args, code, what) in [
        (vec!["modify", U1], 2, "nothing to modify"),
        (vec!["modify", U1, "--attr", "gvt/weight"], 2, "PATH=VALUE"),
        (vec!["modify", U1, "--attr", "remove=1"], 2, "control file"),
        (
            vec!["modify", U1, "--attr", "mdev_type/../remove=1"],
            2,
            "inside the device",
        ),
        (
            vec!["modify", U2, "--attr", "gvt/weight=1"],
            3,
            "not defined",
        ),
        (vec!["modify", U1, "--auto", "--manual"], 2, ""),
        (vec!["modify", U1, "--live", "--auto"], 2, ""),
    ] {
        t.cmd()
            .args(&args)
            .assert()
            .code(code)
            .stderr(contains(what));
    }
}

#[test]
fn modify_live_writes_the_running_vgpus_attribute() {
    let t = gvt();
    t.cmd()
        .args(["define", U1, "--type", "gvt_rs-GVTsim_64M", "--weight", "8"])
        .assert()
        .success();
    t.cmd().args(["start", U1]).assert().success();
    let (code, v) = t.json(&["modify", U1, "--live", "--attr", "gvt/weight=12"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["gvt"]["weight"], 12);
    assert_eq!(
        std::fs::read_to_string(t.dev(U1).join("gvt/weight"))
            .unwrap()
            .trim(),
        "12"
    );
    // The definition is left as it was.
    assert!(std::fs::read_to_string(def_path(&t, "gvt-sim0", U1))
        .unwrap()
        .contains("\"gvt/weight\": \"8\""));
    // What the driver refuses, read-only attributes, links and unknown devices.
    let (code, e) = t.json(&["modify", U1, "--live", "--attr", "gvt/weight=0"]);
    assert_eq!(
        (code, e["error"]["kind"].as_str()),
        (1, Some("attribute-failed"))
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused the value"),
        "{e:#}"
    );
    t.cmd()
        .args(["modify", U1, "--live", "--attr", "gvt/vgpu_id=7"])
        .assert()
        .code(1)
        .stderr(contains("not writable"));
    t.cmd()
        .args(["modify", U1, "--live", "--attr", "mdev_type/create=x"])
        .assert()
        .code(1)
        .stderr(contains("symbolic link"));
    t.cmd()
        .args(["modify", U1, "--live", "--attr", "gvt/nothing=1"])
        .assert()
        .code(1)
        .stderr(contains("no such attribute"));
    t.cmd()
        .args(["modify", U2, "--live", "--attr", "gvt/weight=1"])
        .assert()
        .code(3);
    t.cmd()
        .args([
            "modify",
            U1,
            "--live",
            "--parent",
            "gvt-sim0",
            "--attr",
            "gvt/weight=1",
        ])
        .assert()
        .code(2);
    assert_eq!(
        std::fs::read_to_string(t.dev(U1).join("gvt/weight"))
            .unwrap()
            .trim(),
        "12"
    );
}
