//! Issue 19, findings 3 and 4, through the real binary against the simulated mdev core:
//! root's gvtctl believes no process name, `/proc` link text, definition file or sysfs
//! string that another user can shape.

mod common;

use common::*;
use predicates::prelude::*;
use predicates::str::contains;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

/// A process `pid` in the tree's `/proc` with one descriptor `fd` whose link text is
/// `link` (what `readlink` says; `stat` follows it from the host's `/`) and whose
/// `fdinfo` says `flags` (octal text, `None`: no fdinfo).
fn fake_process(t: &Tree, pid: u32, comm: &[u8], link: &Path, flags: Option<&str>) {
    let p = t.p(&format!("proc/{pid}"));
    std::fs::create_dir_all(p.join("fd")).unwrap();
    std::fs::create_dir_all(p.join("fdinfo")).unwrap();
    std::fs::write(p.join("comm"), comm).unwrap();
    symlink(link, p.join("fd/3")).unwrap();
    if let Some(f) = flags {
        std::fs::write(
            p.join("fdinfo/3"),
            format!("pos:\t0\nflags:\t{f}\nmnt_id:\t1\n"),
        )
        .unwrap();
    }
}

fn bytes_outside_printable_ascii(b: &[u8]) -> Vec<u8> {
    b.iter()
        .copied()
        .filter(|&c| !(c == b'\n' || (0x20..0x7f).contains(&c)))
        .collect()
}

/// A user in an unprivileged user+mount namespace with a tmpfs on `/dev` opens a file
/// of its own called `/dev/vfio/N`: its `/proc/<pid>/fd/<n>` link reads `/dev/vfio/N`
/// but leads to a different file. Here: the link text names the vGPU's node exactly,
/// `stat` through it reaches something that is not the tree's node.
#[test]
fn a_forged_fd_link_does_not_block_destroy() {
    let t = gvt();
    let a = t.create(&["--aperture", "64M"]);
    let node = format!("/dev/vfio/{}", t.group_of(&a));
    // The attacker's own file, and a link whose text is the node's name.
    let fake = t.p("home/mallory/dev/vfio/0");
    std::fs::create_dir_all(fake.parent().unwrap()).unwrap();
    std::fs::write(&fake, "").unwrap();
    fake_process(&t, 666, b"fake-qemu\n", Path::new(&node), Some("02"));
    fake_process(&t, 667, b"fake-qemu2\n", &fake, Some("02"));
    let (code, v) = t.json(&["info", &a]);
    assert_eq!(code, 0);
    assert_eq!(v["in_use"], false, "{v}");
    assert_eq!(v["holders"].as_array().map(Vec::len), Some(0), "{v}");
    t.cmd()
        .args(["destroy", &a])
        .assert()
        .success()
        .stderr(contains("fake-qemu").not());
    assert!(!t.dev(&a).exists());
}

/// An `O_PATH` descriptor names the node without opening the device (any user can
/// make one, even of a node they may not open): it does not hold the vGPU.
#[test]
fn an_o_path_descriptor_is_not_a_holder() {
    let t = gvt();
    let a = t.create(&["--aperture", "64M"]);
    let node = t.p(&format!("dev/vfio/{}", t.group_of(&a)));
    // O_PATH | O_CLOEXEC, as /proc shows them (octal).
    fake_process(&t, 668, b"peeker\n", &node, Some("012000000"));
    let (_, v) = t.json(&["info", &a]);
    assert_eq!(
        (v["in_use"].clone(), v["holders"].clone()),
        (false.into(), serde_json::json!([]))
    );
    t.cmd().args(["destroy", &a]).assert().success();
    // The same descriptor opened read-write is a holder.
    let b = t.create(&["--aperture", "64M"]);
    let node = t.p(&format!("dev/vfio/{}", t.group_of(&b)));
    fake_process(&t, 669, b"qemu\n", &node, Some("02100002"));
    t.cmd()
        .args(["destroy", &b])
        .assert()
        .code(5)
        .stderr(contains("in use by qemu (pid 669)"));
    assert!(t.dev(&b).exists());
}

/// What cannot be verified is said, not acted on: a descriptor that leads to the node
/// but whose fdinfo cannot be understood (so O_PATH or not is unknown) makes `in_use`
/// unknown, and `destroy` warns and goes on (if it really is held, the kernel's
/// `remove` asks the VMM to let go and waits). A descriptor whose fdinfo is gone was
/// closed: no holder at all.
#[test]
fn an_unverifiable_holder_is_reported_not_obeyed() {
    let t = gvt();
    let a = t.create(&["--aperture", "64M"]);
    let g = t.group_of(&a);
    let node = t.p(&format!("dev/vfio/{g}"));
    fake_process(&t, 670, b"vmm\n", &node, Some("zz"));
    let (_, v) = t.json(&["info", &a]);
    assert_eq!(v["in_use"], serde_json::Value::Null, "{v}");
    assert_eq!(v["possible_holders"][0]["pid"], 670);
    assert_eq!(v["possible_holders"][0]["node"], format!("/dev/vfio/{g}"));
    t.cmd()
        .args(["list"])
        .assert()
        .success()
        .stdout(contains("?vmm(670)"));
    t.cmd()
        .args(["destroy", &a])
        .assert()
        .success()
        .stderr(contains(format!(
            "gvtctl: warn: {a}: vmm (pid 670) may hold /dev/vfio/{g}, which could not be verified"
        )))
        .stderr(contains("removing anyway"));
    assert!(!t.dev(&a).exists());
    std::fs::remove_dir_all(t.p("proc/670")).unwrap();
    let c = t.create(&["--aperture", "64M"]);
    let gc = t.group_of(&c);
    fake_process(&t, 680, b"gone\n", &t.p(&format!("dev/vfio/{gc}")), None);
    let (_, v) = t.json(&["info", &c]);
    assert_eq!(
        (v["in_use"].clone(), v["possible_holders"].clone()),
        (false.into(), serde_json::json!([])),
        "{v}"
    );
    t.cmd().args(["destroy", &c]).assert().success();
    // The same when the real node is gone from this /dev and only the link text is left.
    let b = t.create(&["--aperture", "64M"]);
    let gb = t.group_of(&b);
    fake_process(
        &t,
        671,
        b"vmm2\n",
        &t.p(&format!("dev/vfio/{gb}")),
        Some("02"),
    );
    std::fs::remove_file(t.p(&format!("dev/vfio/{gb}"))).unwrap();
    let (_, v) = t.json(&["info", &b]);
    assert_eq!(v["in_use"], serde_json::Value::Null, "{v}");
    assert!(v["possible_holders"][0]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("cannot be examined here")));
    t.cmd().args(["destroy", &b]).assert().success();
}

/// A process name is its owner's choice (`prctl(PR_SET_NAME)`): escape sequences,
/// line breaks and bytes that are not UTF-8 come out as visible escapes in tables,
/// errors and JSON, never raw.
#[test]
fn process_names_and_sysfs_strings_are_escaped() {
    let t = gvt();
    let a = t.create(&["--aperture", "64M"]);
    t.cmd()
        .args(["sim", "hold", &a, "--pid", "672"])
        .assert()
        .success();
    t.cmd()
        .args(["sim", "hold", &a, "--pid", "673"])
        .assert()
        .success();
    // ESC ] 0 ; title BEL (set the window title), ESC [ 2 J (clear the screen), a line
    // break forging an output line, a UTF-8 C1 CSI; and a name that is not UTF-8.
    std::fs::write(
        t.p("proc/672/comm"),
        b"\x1b]0;pwned\x07\x1b[2Jx\ngvtctl: ok\xc2\x9b\n",
    )
    .unwrap();
    std::fs::write(t.p("proc/673/comm"), b"q\xffemu\n").unwrap();
    let shown = "\\x1b]0;pwned\\x07\\x1b[2Jx\\ngvtctl: ok\\x9b";
    let both = format!("{shown}(672),q\\xffemu(673)");
    let out = t.cmd().args(["list"]).output().unwrap();
    assert_eq!(bytes_outside_printable_ascii(&out.stdout), b"", "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&both),
        "{out:?}"
    );
    let out = t.cmd().args(["destroy", &a]).output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(bytes_outside_printable_ascii(&out.stderr), b"", "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("in use by {shown} (pid 672), q\\xffemu (pid 673)")),
        "{out:?}"
    );
    let out = t.cmd().args(["--json", "info", &a]).output().unwrap();
    assert_eq!(bytes_outside_printable_ascii(&out.stdout), b"", "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["holders"][0]["command"], shown);
    assert_eq!(v["holders"][1]["command"], "q\\xffemu");
    // Strings from sysfs: a driver attribute with escapes and a bidi override shows
    // escaped in `info`, and JSON keeps the value while writing only printable ASCII.
    let state = t.dev(&a).join("gvt/state");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&state, "run\x1b[8mning\u{202e}\u{9b}\n").unwrap();
    let out = t.cmd().args(["info", &a]).output().unwrap();
    assert_eq!(bytes_outside_printable_ascii(&out.stdout), b"", "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("run\\x1b[8mning\\u{202e}\\x9b"));
    let out = t.cmd().args(["--json", "info", &a]).output().unwrap();
    assert_eq!(bytes_outside_printable_ascii(&out.stdout), b"", "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gvt"]["state"], "run\x1b[8mning\u{202e}\u{9b}");
}

/// A definition's attribute that leads out of the device through one of its sysfs
/// links (`mdev_type/devices/<other>`, `iommu_group/devices/<other>`) must not reach
/// another vGPU: it fails that definition's start (the device is removed again), the
/// other vGPU stays, and definitions with ordinary attributes still start.
#[test]
fn definition_attributes_stay_inside_the_device() {
    let t = gvt();
    let victim = t.create(&["--type", "gvt_rs-GVTsim_32M"]);
    let d = t.p("etc/mdevctl.d/gvt-sim0");
    std::fs::create_dir_all(&d).unwrap();
    let def = |uuid: &str, attr: &str, value: &str| {
        std::fs::write(
            d.join(uuid),
            serde_json::json!({"mdev_type": "gvt_rs-GVTsim_32M", "start": "auto",
                "attrs": [{attr: value}]})
            .to_string(),
        )
        .unwrap();
    };
    def(U1, &format!("mdev_type/devices/{victim}/remove"), "1");
    def(U2, "gvt/weight", "5");
    def(
        U3,
        &format!("iommu_group/devices/{victim}/gvt/weight"),
        "77",
    );
    let out = t.cmd().args(["start", "--auto"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.dev(&victim).exists(),
        "another definition removed {victim}: {stdout}{err}"
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{err}");
    assert!(stdout.contains(&format!(
        "failed {U1} (gvt_rs-GVTsim_32M on gvt-sim0): could not set attribute 'mdev_type/devices/{victim}/remove' of {U1} to '1'"
    )), "{stdout}");
    assert!(stdout.contains(&format!(
        "failed {U3} (gvt_rs-GVTsim_32M on gvt-sim0): could not set attribute 'iommu_group/devices/{victim}/gvt/weight' of {U3} to '77': 'iommu_group' is a symbolic link"
    )), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(t.dev(&victim).join("gvt/weight"))
            .unwrap()
            .trim(),
        "2",
        "another definition changed {victim}'s weight"
    );
    assert!(!t.dev(U1).exists() && !t.dev(U3).exists());
    assert!(stdout.contains(&format!("started {U2}")), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(t.dev(U2).join("gvt/weight"))
            .unwrap()
            .trim(),
        "5"
    );
}

/// The driver core's control files are not attributes: a definition cannot make its
/// own start remove the device or replay uevents; a link as the last component and
/// an attribute name with escapes are refused with the name shown escaped.
#[test]
fn control_files_links_and_odd_names_are_refused() {
    let t = gvt();
    let d = t.p("etc/mdevctl.d/gvt-sim0");
    std::fs::create_dir_all(&d).unwrap();
    for (uuid, attr, why) in [
        (
            U1,
            "remove",
            "'remove' is a control file of the driver core",
        ),
        (U2, "iommu_group", "'iommu_group' is a symbolic link"),
        (
            U3,
            "gvt/\x1b[2Jweight",
            "could not set attribute 'gvt/\\x1b[2Jweight'",
        ),
    ] {
        std::fs::write(
            d.join(uuid),
            serde_json::json!({"mdev_type": "gvt_rs-GVTsim_32M", "start": "manual",
                "attrs": [{attr: "1"}]})
            .to_string(),
        )
        .unwrap();
        let out = t.cmd().args(["start", uuid]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{attr:?}: {out:?}");
        assert_eq!(bytes_outside_printable_ascii(&out.stderr), b"", "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{attr:?}: {out:?}"
        );
        assert!(!t.dev(uuid).exists());
    }
}
