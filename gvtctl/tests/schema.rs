//! Every `--json` output against its checked-in schema (`gvtctl/doc/schema/`), and the
//! checked-in man pages, completions and schemas against what `gvtctl generate` writes
//! now (so a changed option or output type cannot leave them stale).

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn doc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("doc")
}

fn schema(name: &str) -> Value {
    let p = doc_dir().join("schema").join(format!("{name}.schema.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).expect("schema file")).expect("schema JSON")
}

/// `v` must be valid against schema `name`; the errors otherwise.
fn check(name: &str, v: &Value) {
    let validator = jsonschema::validator_for(&schema(name)).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{v:#}");
}

/// Run `gvtctl --json ARGS`, check the exit code and the output against `name`.
fn run(t: &Tree, args: &[&str], code: i32, name: &str) -> Value {
    let (c, v) = t.json(args);
    assert_eq!(c, code, "{args:?}: {v:#}");
    check(name, &v);
    v
}

#[test]
fn generated_files_are_checked_in() {
    let out = tempfile::tempdir().unwrap();
    let t = gvt();
    let v = run(
        &t,
        &["generate", out.path().to_str().unwrap()],
        0,
        "generate",
    );
    let files: Vec<String> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert!(files.contains(&"man/gvtctl.1".to_string()), "{files:?}");
    assert!(files.contains(&"man/gvtctl-top.1".to_string()), "{files:?}");
    assert!(
        files.contains(&"completions/gvtctl.bash".to_string()),
        "{files:?}"
    );
    assert!(
        files.contains(&"schema/stats.schema.json".to_string()),
        "{files:?}"
    );
    for f in &files {
        let now = std::fs::read_to_string(out.path().join(f)).unwrap();
        let checked_in = std::fs::read_to_string(doc_dir().join(f)).unwrap_or_default();
        assert!(
            now == checked_in,
            "gvtctl/doc/{f} is stale: run `cargo run -p gvtctl -- generate gvtctl/doc`"
        );
    }
    // Nothing checked in that is no longer generated.
    for d in ["man", "completions", "schema"] {
        for e in std::fs::read_dir(doc_dir().join(d)).unwrap() {
            let f = format!("{d}/{}", e.unwrap().file_name().to_string_lossy());
            assert!(
                files.contains(&f),
                "gvtctl/doc/{f} is not generated any more"
            );
        }
    }
}

#[test]
fn every_json_output_matches_its_schema() {
    let t = all();
    run(&t, &["types"], 0, "types");
    let i = run(
        &t,
        &["create", "--aperture", "64M", "--uuid", U1],
        0,
        "instance",
    );
    assert_eq!(i["uuid"], U1);
    run(&t, &["info", U1], 0, "instance");
    run(
        &t,
        &["create", "--type", "mtty-2", "--uuid", U3],
        0,
        "instance",
    );
    run(&t, &["vmm-args", U1], 0, "vmm-args");
    let one = run(&t, &["vmm-args", U1, "--vmm", "libvirt"], 0, "vmm-args");
    assert!(
        one.get("qemu").is_none() && one["libvirt"].is_string(),
        "{one:#}"
    );
    let g = t.group_of(U1);
    run(&t, &["udev-match-group", &g], 0, "udev-match-group");
    run(&t, &["udev-match-group", "999"], 1, "udev-match-group");

    // Definitions: define, autostart, modify, --jsonfile, a damaged file, undefine.
    run(
        &t,
        &[
            "define",
            U2,
            "--type",
            "gvt_rs-GVTsim_32M",
            "--parent",
            "gvt-sim0",
        ],
        0,
        "definition",
    );
    run(&t, &["autostart", U2, "on"], 0, "definition");
    run(
        &t,
        &["modify", U2, "--attr", "gvt/weight=3"],
        0,
        "definition",
    );
    let file = t.p("def.json");
    std::fs::write(
        &file,
        r#"{"mdev_type":"gvt_rs-GVTsim_32M","start":"manual","attrs":[]}"#,
    )
    .unwrap();
    let u4 = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1004";
    run(
        &t,
        &[
            "define",
            u4,
            "--parent",
            "gvt-sim0",
            "--jsonfile",
            file.to_str().unwrap(),
        ],
        0,
        "definition",
    );
    std::fs::write(
        t.p("etc/mdevctl.d/gvt-sim0/83b8f4f2-509f-382f-3c1e-e6bfe0fa1005"),
        "",
    )
    .unwrap();
    let l = run(&t, &["list"], 0, "list");
    assert_eq!(
        l["damaged_definitions"].as_array().unwrap().len(),
        1,
        "{l:#}"
    );
    run(&t, &["start", "--auto"], 0, "start-auto");
    run(
        &t,
        &["modify", U2, "--live", "--attr", "gvt/weight=5"],
        0,
        "instance",
    );
    run(&t, &["stop", U2], 0, "removed");
    run(&t, &["start", U2], 0, "instance");
    run(&t, &["undefine", u4], 0, "undefined");

    // Statistics, once and in a loop (one JSON object a line).
    run(
        &t,
        &["sim", "hold", U1, "--pid", "4242", "--vm-name", "web"],
        0,
        "sim",
    );
    run(
        &t,
        &["sim", "load", U1, "--rate", "rcs_time_ns=250000000"],
        0,
        "sim",
    );
    let s = run(&t, &["stats", "--interval", "0"], 0, "stats");
    assert_eq!(s["schema_version"], 1);
    let out = t
        .cmd()
        .args(["--json", "top", "-l", "0", "-n", "3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in lines {
        check("stats", &serde_json::from_str(l).unwrap());
    }

    // Errors, with their details.
    let e = run(&t, &["create", "--aperture", "4G"], 4, "error");
    assert!(
        !e["error"]["details"]["free_types"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{e:#}"
    );
    let e = run(&t, &["destroy", U1], 5, "error");
    assert_eq!(
        e["error"]["details"]["holders"][0]["vm_name"], "web",
        "{e:#}"
    );
    run(
        &t,
        &["info", "83b8f4f2-509f-382f-3c1e-e6bfe0fa1999"],
        3,
        "error",
    );
    run(&t, &["create", "--aperture", "12Q"], 2, "error");
    run(&t, &["stats", U3], 2, "error");
    std::fs::remove_dir_all(t.p("proc/4242")).unwrap();
    run(&t, &["destroy", U1], 0, "removed");

    // The fake tree's own commands.
    let fresh = tempfile::tempdir().unwrap();
    let (c, v) = {
        let out = assert_cmd::Command::cargo_bin("gvtctl")
            .unwrap()
            .args([
                "--root",
                fresh.path().to_str().unwrap(),
                "--json",
                "sim",
                "init",
            ])
            .output()
            .unwrap();
        (
            out.status.code(),
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        )
    };
    assert_eq!(c, Some(0));
    check("sim", &v);
}

/// The check can fail: outputs that break their schema are caught.
#[test]
fn schemas_reject_wrong_shapes() {
    let t = gvt();
    t.create(&["--aperture", "64M", "--uuid", U1]);
    let (_, mut s) = t.json(&["stats", "--interval", "0"]);
    check("stats", &s);
    let valid = |name: &str, v: &Value| {
        jsonschema::validator_for(&schema(name))
            .unwrap()
            .is_valid(v)
    };
    s.as_object_mut().unwrap().remove("schema_version");
    assert!(!valid("stats", &s));
    let (_, mut s) = t.json(&["stats", "--interval", "0"]);
    s["vgpus"][0]["rcs"]["util_pct"] = Value::from("40%");
    assert!(!valid("stats", &s));
    let (_, mut i) = t.json(&["info", U1]);
    i["uuid"] = Value::from("not-a-uuid");
    assert!(!valid("instance", &i));
    let (_, i) = t.json(&["info", U1]);
    assert!(!valid("list", &i), "an instance is not a list");
    let (_, e) = t.json(&["info", U2]);
    assert!(valid("error", &e));
    assert!(!valid(
        "error",
        &serde_json::json!({"error": {"kind": "x"}})
    ));
}
