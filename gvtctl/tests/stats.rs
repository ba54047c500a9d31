//! `gvtctl stats` and `gvtctl top` against the fake sysfs tree, whose clock advances one
//! simulated second per reading and whose counters grow by a programmed load
//! (`gvtctl sim load`): every figure is exact.

mod common;

use common::*;
use predicates::str::contains;
use serde_json::Value;

/// A tree with two vGPUs: U1 (64M, weight 4) under load and held by VM "web", U2 idle.
fn loaded() -> Tree {
    let t = gvt();
    t.create(&["--aperture", "64M", "--uuid", U1]);
    t.create(&["--aperture", "32M", "--uuid", U2]);
    t.cmd()
        .args(["sim", "hold", U1, "--pid", "4242", "--vm-name", "web"])
        .assert()
        .success();
    t.cmd()
        .args([
            "sim",
            "load",
            U1,
            "--rate",
            "rcs_time_ns=400000000",
            "--rate",
            "bcs_time_ns=50000000",
            "--rate",
            "submissions=120",
            "--rate",
            "cmds_audited=960",
            "--rate",
            "reject_privileged=3",
            "--rate",
            "reject_bad_address=1",
            "--rate",
            "traps_pm=2000",
            "--rate",
            "traps_tail=120",
            "--rate",
            "hangs_total=1",
            "--rate",
            "state=running",
        ])
        .assert()
        .success();
    t
}

fn vgpu<'a>(r: &'a Value, uuid: &str) -> &'a Value {
    r["vgpus"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["uuid"] == uuid)
        .unwrap_or_else(|| panic!("{uuid} in {r:#}"))
}

fn counter(t: &Tree, uuid: &str, name: &str) -> u64 {
    std::fs::read_to_string(t.dev(uuid).join("gvt/stats"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn stats_figures_are_the_counter_deltas_over_the_interval() {
    let t = loaded();
    let (code, r) = t.json(&["stats", "--interval", "0"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["interval_s"], 1.0);
    let v = vgpu(&r, U1);
    assert_eq!(v["type"], "gvt_rs-GVTsim_64M");
    assert_eq!(v["state"], "running");
    assert_eq!(v["weight"], 4);
    assert_eq!(v["rcs"]["busy_ns"], 400_000_000u64);
    assert_eq!(v["rcs"]["util_pct"], 40.0);
    assert_eq!(v["bcs"]["util_pct"], 5.0);
    assert_eq!(v["submissions"]["delta"], 120);
    assert_eq!(v["submissions"]["per_s"], 120.0);
    assert_eq!(v["cmds_audited"]["per_s"], 960.0);
    assert_eq!(v["rejects"]["privileged"]["per_s"], 3.0);
    assert_eq!(v["rejects"]["bad_address"]["per_s"], 1.0);
    assert_eq!(v["rejects"]["malformed"]["per_s"], 0.0);
    assert_eq!(v["rejected"]["per_s"], 4.0);
    assert_eq!(v["traps"]["pm"]["per_s"], 2000.0);
    assert_eq!(v["traps"]["tail"]["per_s"], 120.0);
    assert_eq!(v["hangs"], 0);
    assert_eq!(v["holders"][0]["pid"], 4242);
    assert_eq!(v["holders"][0]["vm_name"], "web");
    // Totals are what gvt/stats says now (two simulated seconds have passed).
    assert_eq!(v["counters"]["rcs_time_ns"], counter(&t, U1, "rcs_time_ns"));
    assert_eq!(counter(&t, U1, "rcs_time_ns"), 800_000_000);
    assert_eq!(v["hangs_total"], 2);
    let idle = vgpu(&r, U2);
    assert_eq!(idle["state"], "idle");
    assert_eq!(idle["rcs"]["util_pct"], 0.0);
    assert_eq!(idle["holders"], Value::Array(vec![]));
    // One vGPU only.
    let (_, r) = t.json(&["stats", U2, "--interval", "0"]);
    assert_eq!(r["vgpus"].as_array().unwrap().len(), 1);
    assert_eq!(r["vgpus"][0]["uuid"], U2);
}

#[test]
fn stats_human_output() {
    let t = loaded();
    t.cmd()
        .args(["stats", U1, "--interval", "0"])
        .assert()
        .success()
        .stdout(contains(format!(
            "{U1} gvt_rs-GVTsim_64M on gvt-sim0, state running, weight 4, VM web (qemu-system-x86_64 pid 4242)"
        )))
        .stdout(contains("render 40.0% (400000000 ns busy), blitter 5.0%"))
        .stdout(contains("submitted:   120.0/s"))
        .stdout(contains("privileged 3.0/s"))
        .stdout(contains("pm 2000.0/s"));
}

#[test]
fn top_loops_and_follows_a_live_weight_change() {
    let t = loaded();
    let out = t
        .cmd()
        .args(["top", "-l", "0", "-n", "2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("RCS%").count(), 2, "{text}");
    let row = text.lines().find(|l| l.starts_with(U1)).unwrap();
    for col in [
        "running", " 4 ", "40.0%", "5.0%", "120", "960", "2120", "VM web",
    ] {
        assert!(row.contains(col), "{col} in {row}");
    }
    // A live weight change shows in the next report.
    t.cmd()
        .args(["modify", U1, "--live", "--attr", "gvt/weight=9"])
        .assert()
        .success();
    let (_, r) = t.json(&["top"]);
    assert_eq!(vgpu(&r, U1)["weight"], 9);
    // One JSON object a line in a loop.
    let out = t
        .cmd()
        .args(["--json", "top", "-l", "0", "--count", "2"])
        .output()
        .unwrap();
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|r| vgpu(r, U1)["rcs"]["util_pct"] == 40.0));
}

#[test]
fn stats_errors() {
    let t = gvt();
    // Nothing running: an empty report, not an error.
    let (code, r) = t.json(&["stats", "--interval", "0"]);
    assert_eq!((code, r["vgpus"].as_array().unwrap().len()), (0, 0));
    t.cmd()
        .args(["top"])
        .assert()
        .success()
        .stdout(contains("no gvt-rs vGPUs running"));
    let (code, e) = t.json(&["stats", U1]);
    assert_eq!(
        (code, e["error"]["kind"].as_str()),
        (3, Some("unknown-uuid"))
    );
    t.cmd()
        .args(["define", U1, "--type", "gvt_rs-GVTsim_64M"])
        .assert()
        .success();
    let (code, e) = t.json(&["stats", U1]);
    assert_eq!((code, e["error"]["kind"].as_str()), (3, Some("not-active")));
    for bad in [
        vec!["stats", "--interval=-1"],
        vec!["stats", "--interval", "nan"],
        vec!["top", "-l", "7200"],
        vec!["top", "-n", "0"],
        vec!["stats", "not-a-uuid"],
    ] {
        t.cmd().args(&bad).assert().code(2);
    }
    // A vGPU of another driver has no gvt/stats.
    let t = all();
    t.create(&["--type", "mtty-2", "--uuid", U3]);
    t.cmd()
        .args(["stats", U3])
        .assert()
        .code(2)
        .stderr(contains("not a gvt-rs vGPU"));
}
