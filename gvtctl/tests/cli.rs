//! gvtctl through the real binary against the simulated mdev core.

mod common;

use common::*;
use libgvtctl::fake_sysfs::Fixture;
use predicates::prelude::*;
use predicates::str::contains;

// ---- types ---------------------------------------------------------------------------

#[test]
fn types_lists_gvt_rs_i915_and_mtty() {
    let t = all();
    t.cmd()
        .arg("types")
        .assert()
        .success()
        .stdout(contains("PARENT"))
        .stdout(contains("gvt_rs-GVTsim_64M"))
        .stdout(contains("i915-GVTg_V5_8"))
        .stdout(contains("Dual port serial: 2 serial ports"));
    let (code, v) = t.json(&["types"]);
    assert_eq!(code, 0);
    let types = v["types"].as_array().expect("types");
    assert_eq!(types.len(), 4 + 4 + 2);
    let find = |id: &str| {
        types
            .iter()
            .find(|x| x["id"] == id)
            .unwrap_or_else(|| panic!("{id}"))
            .clone()
    };
    // GVT-g's four types, their exact description strings and parsed partitions.
    let want = [
        (
            "i915-GVTg_V5_1",
            "low_gm_size: 512MB\nhigh_gm_size: 2048MB\nfence: 4\nresolution: 1920x1200\nweight: 16",
            512u64,
            2048u64,
            16,
        ),
        (
            "i915-GVTg_V5_2",
            "low_gm_size: 256MB\nhigh_gm_size: 1024MB\nfence: 4\nresolution: 1920x1200\nweight: 8",
            256,
            1024,
            8,
        ),
        (
            "i915-GVTg_V5_4",
            "low_gm_size: 128MB\nhigh_gm_size: 512MB\nfence: 4\nresolution: 1920x1200\nweight: 4",
            128,
            512,
            4,
        ),
        (
            "i915-GVTg_V5_8",
            "low_gm_size: 64MB\nhigh_gm_size: 384MB\nfence: 4\nresolution: 1024x768\nweight: 2",
            64,
            384,
            2,
        ),
    ];
    for (id, desc, low, high, w) in want {
        let x = find(id);
        assert_eq!(x["description"], desc);
        assert_eq!(x["kind"], "i915-gvtg");
        assert_eq!(x["parent"], "0000:00:02.0");
        assert_eq!(x["partition"]["aperture"], low << 20);
        assert_eq!(x["partition"]["high_gm"], high << 20);
        assert_eq!(x["partition"]["fences"], 4);
        assert_eq!(x["partition"]["weight"], w);
    }
    // gvt-rs as the driver registers it with aperture_mb=256 gm_mb=1024 (the VM test
    // tests/vm/tests/gvtctl.rs checks the same numbers against the real driver).
    let want = [
        ("gvt_rs-GVTsim_32M", 8, 32u64, 94u64, 2, "1024x768", 2),
        ("gvt_rs-GVTsim_64M", 4, 64, 188, 4, "1920x1200", 4),
        ("gvt_rs-GVTsim_128M", 2, 128, 376, 8, "1920x1200", 8),
        ("gvt_rs-GVTsim_256M", 1, 256, 752, 16, "1920x1200", 16),
    ];
    for (id, n, low, high, f, res, w) in want {
        let g = find(id);
        assert_eq!(g["kind"], "gvt-rs");
        assert_eq!(g["name"], id.trim_start_matches("gvt_rs-"));
        assert_eq!(g["device_api"], "vfio-pci");
        assert_eq!(g["available_instances"], n);
        assert_eq!(
            g["description"],
            format!("low_gm_size: {low}MB\nhigh_gm_size: {high}MB\nfence: {f}\nresolution: {res}\nweight: {w}")
        );
        assert_eq!(g["partition"]["aperture"], low << 20);
        assert_eq!(g["partition"]["high_gm"], high << 20);
        assert_eq!(g["partition"]["fences"], f);
        assert_eq!(g["partition"]["resolution"], res);
        assert_eq!(g["partition"]["weight"], w);
    }
    assert!(t
        .p("sys/devices/virtual/gvt_rs/gvt-sim0/mdev_supported_types")
        .is_dir());
    let m = find("mtty-2");
    assert_eq!(m["kind"], "generic");
    assert_eq!(m["partition"], serde_json::Value::Null);
    assert_eq!(m["description"], "2 serial ports");
    assert_eq!(m["available_instances"], 2);
    // One parent only.
    let (_, v) = t.json(&["types", "--parent", "mtty"]);
    assert_eq!(v["types"].as_array().map(Vec::len), Some(2));
}

#[test]
fn no_parent_says_load_the_module() {
    let t = Tree::new(&[]);
    t.cmd()
        .arg("types")
        .assert()
        .code(3)
        .stderr(contains("is the gvt_rs module loaded? (modprobe gvt_rs)"));
    let (code, v) = t.json(&["create", "--aperture", "64M"]);
    assert_eq!(code, 3);
    assert_eq!(v["error"]["kind"], "no-parent");
    assert_eq!(v["error"]["exit_code"], 3);
    t.cmd()
        .args(["types", "--parent", "gvt-sim0"])
        .assert()
        .code(3)
        .stderr(contains("modprobe gvt_rs"));
    t.cmd()
        .arg("list")
        .assert()
        .success()
        .stderr(contains("modprobe gvt_rs"));
}

#[test]
fn unknown_parent_lists_present_ones() {
    let t = all();
    t.cmd()
        .args(["types", "--parent", "gvt-sim9"])
        .assert()
        .code(3)
        .stderr(contains(
            "'gvt-sim9' not found; parents present: 0000:00:02.0, gvt-sim0, mtty",
        ));
}

// ---- create --------------------------------------------------------------------------

#[test]
fn create_by_aperture_picks_smallest_fitting_and_reacts_like_the_mdev_core() {
    let t = gvt();
    assert_eq!(
        (
            t.avail("gvt-sim0", "gvt_rs-GVTsim_64M"),
            t.avail("gvt-sim0", "gvt_rs-GVTsim_256M")
        ),
        (4, 1)
    );
    let out = t
        .cmd()
        .args(["create", "--aperture", "100M"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let uuid = text.lines().next().expect("uuid line").to_string();
    assert!(libgvtctl::Uuid::parse(&uuid).is_ok(), "{uuid}");
    assert_eq!(&uuid[14..15], "4", "v4 UUID");
    assert!(
        text.contains(
            "created gvt_rs-GVTsim_128M on gvt-sim0: aperture 128M, high GM 376M, 8 fences"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "-device vfio-pci,sysfsdev=/sys/bus/mdev/devices/{uuid}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("--device path=/sys/bus/mdev/devices/{uuid}/\n")),
        "{text}"
    );
    // The mdev core made the device, its links, the VFIO node; instances dropped everywhere.
    let dev = t.dev(&uuid);
    assert!(dev.join("mdev_type").exists());
    assert!(t
        .p(&format!(
            "sys/class/mdev_bus/gvt-sim0/mdev_supported_types/gvt_rs-GVTsim_128M/devices/{uuid}"
        ))
        .exists());
    let g = t.group_of(&uuid);
    assert!(t.p(&format!("dev/vfio/{g}")).exists());
    assert_eq!(
        std::fs::read_to_string(dev.join("gvt/aperture_size"))
            .unwrap()
            .trim(),
        (128u64 << 20).to_string()
    );
    assert_eq!(t.avail("gvt-sim0", "gvt_rs-GVTsim_128M"), 1);
    assert_eq!(t.avail("gvt-sim0", "gvt_rs-GVTsim_256M"), 0);
    assert_eq!(t.avail("gvt-sim0", "gvt_rs-GVTsim_32M"), 4);
    // A second one lands in the next free partition.
    let u2 = t.create(&["--aperture", "64M"]);
    let base = std::fs::read_to_string(t.dev(&u2).join("gvt/aperture_base")).unwrap();
    assert_eq!(base.trim(), (128u64 << 20).to_string());
    assert_ne!(t.group_of(&u2), g);
}

#[test]
fn create_skips_exhausted_smallest_type() {
    let t = gvt();
    // Fragmentation: the driver reports no room for the smallest type.
    std::fs::write(t.p("sys/class/mdev_bus/gvt-sim0/mdev_supported_types/gvt_rs-GVTsim_32M/available_instances"), "0\n").unwrap();
    let (code, v) = t.json(&["create", "--aperture", "32M"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["type"], "gvt_rs-GVTsim_64M");
    assert_eq!(v["active"], true);
}

/// Issue 14: `create --like UUID` makes a migration target of that vGPU:
/// its parent and type, its weight and display path; --weight overrides.
#[test]
fn create_like_copies_parent_type_weight_and_display() {
    let t = all();
    let (code, v) = t.json(&[
        "create",
        "--type",
        "gvt_rs-GVTsim_64M",
        "--weight",
        "7",
        "--display",
        "dmabuf",
    ]);
    assert_eq!(code, 0, "{v}");
    let src = v["uuid"].as_str().unwrap().to_string();
    let (code, v) = t.json(&["create", "--like", &src]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["type"], "gvt_rs-GVTsim_64M");
    assert_eq!(v["parent"], "gvt-sim0");
    assert_eq!(v["gvt"]["weight"], 7);
    assert_eq!(v["gvt"]["dmabuf"], 1);
    assert_ne!(v["uuid"], src.as_str());
    let (_, v) = t.json(&["create", "--like", &src, "--weight", "3"]);
    assert_eq!(v["gvt"]["weight"], 3);
    // --like names the type: no partition or type alongside it.
    t.cmd()
        .args(["create", "--like", &src, "--aperture", "32M"])
        .assert()
        .code(2);
}

/// Issue 14: `create --like` finds a parent offering the source's type when the
/// source's parent has no room; a `--parent` (or a host) without that type is a typed
/// error naming the parents that offer it; `info` shows the migration capability and
/// state, and the type a target must have.
#[test]
fn create_like_finds_a_parent_with_the_type_or_says_none_does() {
    let t = Tree::new(&[Fixture::GvtRs, Fixture::GvtRsPci, Fixture::I915]);
    let src = t.create(&["--type", "gvt_rs-GVTsim_64M", "--parent", "gvt-sim0"]);
    // The source's parent has room: the target goes there.
    let (code, v) = t.json(&["create", "--like", &src]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["parent"], "gvt-sim0");
    // No room left there: the other parent offering the type.
    std::fs::write(
        t.p("sys/class/mdev_bus/gvt-sim0/mdev_supported_types/gvt_rs-GVTsim_64M/available_instances"),
        "0\n",
    )
    .unwrap();
    let (code, v) = t.json(&["create", "--like", &src]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["parent"], "0000:00:04.0");
    assert_eq!(v["type"], "gvt_rs-GVTsim_64M");
    // A --parent that does not offer the type.
    let (code, v) = t.json(&["create", "--like", &src, "--parent", "0000:00:02.0"]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["error"]["kind"], "no-migration-target");
    assert_eq!(v["error"]["details"]["uuid"], src.as_str());
    assert_eq!(
        v["error"]["details"]["present"],
        serde_json::json!(["0000:00:04.0", "gvt-sim0"])
    );
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("no parent named 0000:00:02.0 offers type gvt_rs-GVTsim_64M"),
        "{msg}"
    );
    // A GVT-g source: no gvt-rs parent offers its type.
    let g = t.create(&["--type", "i915-GVTg_V5_4"]);
    let (code, v) = t.json(&["create", "--like", &g, "--parent", "gvt-sim0"]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["error"]["kind"], "no-migration-target");
    assert_eq!(
        v["error"]["details"]["present"],
        serde_json::json!(["0000:00:02.0"])
    );
    // info: the capability, the state and the target's type.
    let (code, v) = t.json(&["info", &src]);
    assert_eq!(code, 0);
    assert_eq!(
        v["migration"]["capabilities"],
        serde_json::json!(["stop_copy", "p2p", "pre_copy"])
    );
    assert_eq!(v["migration"]["state"], "running");
    assert_eq!(v["migration"]["target_type"], "gvt_rs-GVTsim_64M");
    assert_eq!(v["migration"]["figures"]["refused"], 0);
    t.cmd().args(["info", &src]).assert().success().stdout(contains(format!(
        "migration:          stop_copy p2p pre_copy (state running); a target: gvtctl create --like {src} (type gvt_rs-GVTsim_64M)"
    )));
    // Not a gvt-rs vGPU: no migration information.
    let (_, v) = t.json(&["info", &g]);
    assert!(v["migration"].is_null(), "{v}");
}

#[test]
fn create_prefers_gvt_rs_and_honours_parent_and_high_gm_and_fences() {
    let t = all();
    let (_, v) = t.json(&["create", "--aperture", "0x2000000", "--fences", "5"]);
    assert_eq!(v["type"], "gvt_rs-GVTsim_128M");
    let u = v["uuid"].as_str().unwrap().to_string();
    t.cmd().args(["destroy", &u]).assert().success();
    let (_, v) = t.json(&["create", "--aperture", "64M", "--high-gm", "700M"]);
    assert_eq!(v["type"], "gvt_rs-GVTsim_256M");
    assert_eq!(v["partition"]["high_gm"], 752u64 << 20);
    // gvt-sim0 is full now: the next smallest fitting type is GVT-g's.
    let (_, v) = t.json(&["create", "--aperture", "64M", "--high-gm", "700M"]);
    assert_eq!(v["type"], "i915-GVTg_V5_2");
    let u = v["uuid"].as_str().unwrap().to_string();
    t.cmd().args(["destroy", &u]).assert().success();
    let (_, v) = t.json(&["create", "--aperture", "128M", "--parent", "0000:00:02.0"]);
    assert_eq!(v["type"], "i915-GVTg_V5_4");
    // More high GM than any gvt-rs type has: GVT-g's type with 1G.
    let (_, v) = t.json(&["create", "--aperture", "64M", "--high-gm", "1G"]);
    assert_eq!(v["type"], "i915-GVTg_V5_2");
    let (code, v) = t.json(&["create", "--aperture", "0x4000000", "--fences", "17"]);
    assert_eq!(code, 4);
    assert_eq!(v["error"]["kind"], "no-type-fits");
}

#[test]
fn create_by_type_with_uuid_weight_and_define() {
    let t = gvt();
    let upper = U1.to_uppercase();
    let (code, v) = t.json(&[
        "create",
        "--type",
        "gvt_rs-GVTsim_64M",
        "--uuid",
        &upper,
        "--weight",
        "9",
        "--define",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["uuid"], U1);
    assert_eq!(v["gvt"]["weight"], 9);
    assert_eq!(v["gvt"]["vgpu_id"], 1);
    assert_eq!(v["gvt"]["state"], "running");
    assert_eq!(v["definition"]["start"], "auto");
    assert_eq!(
        v["definition"]["path"],
        format!("/etc/mdevctl.d/gvt-sim0/{U1}")
    );
    assert_eq!(
        v["vmm_args"]["qemu"],
        format!("-device vfio-pci,sysfsdev=/sys/bus/mdev/devices/{U1}")
    );
    // mdevctl's exact file.
    let file = std::fs::read_to_string(t.p(&format!("etc/mdevctl.d/gvt-sim0/{U1}"))).unwrap();
    assert_eq!(
        file,
        "{\n  \"mdev_type\": \"gvt_rs-GVTsim_64M\",\n  \"start\": \"auto\",\n  \"attrs\": [\n    {\n      \"gvt/weight\": \"9\"\n    }\n  ]\n}"
    );
    // By the type's name too, and a manual definition.
    let (code, v) = t.json(&["create", "--type", "GVTsim_128M", "--define", "--manual"]);
    assert_eq!(code, 0);
    assert_eq!(v["definition"]["start"], "manual");
}

#[test]
fn create_and_define_choose_the_display_path() {
    let t = all();
    // The driver's default: region planes only (any VMM display), and gvt/display says why
    // the screen is black.
    let (code, v) = t.json(&["create", "--aperture", "64M"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["gvt"]["dmabuf"], 0);
    let display = v["gvt"]["display"].as_str().unwrap();
    assert!(
        display.contains("guest has not initialized the display"),
        "{display}"
    );
    let res = v["partition"]["resolution"].as_str().unwrap();
    assert!(
        display.contains(&format!("monitor: {res} ")),
        "the type's resolution {res}: {display}"
    );
    // A VMM without GL: region planes, also persisted in the definition.
    let (code, v) = t.json(&[
        "create",
        "--aperture",
        "64M",
        "--display",
        "region",
        "--uuid",
        U1,
        "--define",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["gvt"]["dmabuf"], 0);
    let file = std::fs::read_to_string(t.p(&format!("etc/mdevctl.d/gvt-sim0/{U1}"))).unwrap();
    assert!(file.contains("\"gvt/dmabuf\": \"0\""), "{file}");
    let (code, v) = t.json(&[
        "define",
        "--type",
        "gvt_rs-GVTsim_64M",
        "--display",
        "dmabuf",
        "--weight",
        "2",
    ]);
    assert_eq!(code, 0, "{v}");
    let attrs = v["definition"]["attrs"].to_string();
    assert!(
        attrs.contains("gvt/dmabuf") && attrs.contains("gvt/weight"),
        "{v}"
    );
    // Other drivers have no such switch.
    let (code, v) = t.json(&["create", "--type", "mtty-1", "--display", "region"]);
    assert_eq!(code, 2, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--display applies to gvt-rs types only"),
        "{v}"
    );
    t.cmd()
        .args(["create", "--aperture", "64M", "--display", "gl"])
        .assert()
        .code(2);
}

#[test]
fn sim_dmabuf_attribute_takes_only_0_or_1() {
    let t = gvt();
    let (code, v) = t.json(&["create", "--aperture", "64M"]);
    assert_eq!(code, 0, "{v}");
    let u = v["uuid"].as_str().unwrap().to_string();
    let f = t.p(&format!("sys/bus/mdev/devices/{u}/gvt/dmabuf"));
    let core = libgvtctl::fake_sysfs::FakeMdevSysfs::new(&t.p(""));
    use libgvtctl::Sysfs;
    assert!(core.write(&f, b"2\n").is_err());
    core.write(&f, b"0\n").unwrap();
    assert_eq!(std::fs::read_to_string(&f).unwrap().trim(), "0");
}

#[test]
fn create_mtty_generic_type() {
    let t = all();
    let (code, v) = t.json(&["create", "--type", "mtty-2"]);
    assert_eq!(code, 0);
    assert_eq!(v["partition"], serde_json::Value::Null);
    assert_eq!(v["gvt"], serde_json::Value::Null);
    assert_eq!(t.avail("mtty", "mtty-2"), 1);
    assert_eq!(t.avail("mtty", "mtty-1"), 2);
    t.cmd()
        .args(["create", "--aperture", "32M", "--parent", "mtty"])
        .assert()
        .code(4)
        .stderr(contains(
            "parent mtty offers no type with a graphics-memory partition: name one with --type",
        ))
        .stderr(contains("modprobe").not());
    let (code, v) = t.json(&["create", "--type", "mtty-1", "--weight", "3"]);
    assert_eq!(code, 2);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gvt-rs types only"));
}

#[test]
fn create_errors() {
    let t = gvt();
    // Nothing fits: lists what is offered.
    t.cmd()
        .args(["create", "--aperture", "4G"])
        .assert()
        .code(4)
        .stderr(contains("no mdev type provides aperture 4G"))
        .stderr(contains(
            "gvt_rs-GVTsim_256M on gvt-sim0: aperture 256M, high GM 752M, 16 fences (1 left)",
        ));
    // Bad size names the accepted forms.
    for bad in ["12Q", "0xZZ", "", "1.5.5G", "99999999999G"] {
        t.cmd()
            .args(["create", "--aperture", bad])
            .assert()
            .code(2)
            .stderr(contains("accepted forms are"))
            .stderr(contains("0x20000000"))
            .stderr(contains("512M"))
            .stderr(contains("1.5G"));
    }
    // Decimal sizes as users type them: 1.5G is 1536M, a size no type offers.
    t.cmd()
        .args(["create", "--aperture", "1.5G"])
        .assert()
        .code(4)
        .stderr(contains("no mdev type provides aperture 1536M"));
    let (code, v) = t.json(&["create", "--aperture", "12Q"]);
    assert_eq!(
        (code, v["error"]["kind"].as_str()),
        (2, Some("invalid-size"))
    );
    t.cmd()
        .args(["create", "--aperture", "64M", "--uuid", "not-a-uuid"])
        .assert()
        .code(2)
        .stderr(contains("invalid UUID"));
    t.cmd()
        .args(["create"])
        .assert()
        .code(2)
        .stderr(contains("--aperture SIZE"));
    t.cmd()
        .args(["create", "--type", "i915-GVTg_V5_4"])
        .assert()
        .code(3)
        .stderr(contains(
            "type 'i915-GVTg_V5_4' not found; types present: gvt_rs-GVTsim_128M",
        ));
    t.cmd()
        .args([
            "create",
            "--type",
            "gvt_rs-GVTsim_64M",
            "--aperture",
            "128M",
        ])
        .assert()
        .code(4);
    t.cmd()
        .args(["create", "--aperture", "64M", "--manual"])
        .assert()
        .code(2);
    // Duplicate UUID.
    t.create(&["--aperture", "64M", "--uuid", U1]);
    t.cmd()
        .args(["create", "--aperture", "64M", "--uuid", U1])
        .assert()
        .code(8)
        .stderr(contains("already exists"));
}

#[test]
fn exhausted_shows_what_is_left_and_who_holds_it() {
    let t = gvt();
    let a = t.create(&["--type", "gvt_rs-GVTsim_128M"]);
    let b = t.create(&["--type", "gvt_rs-GVTsim_64M"]);
    t.cmd()
        .args([
            "sim",
            "hold",
            &a,
            "--pid",
            "4242",
            "--command",
            "qemu-system-x86",
        ])
        .assert()
        .success();
    assert_eq!(t.avail("gvt-sim0", "gvt_rs-GVTsim_128M"), 0);
    let out = t
        .cmd()
        .args(["create", "--aperture", "100M"])
        .assert()
        .code(4);
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(err.contains("no instances left for aperture 100M"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains("gvt_rs-GVTsim_32M on gvt-sim0: aperture 32M, high GM 94M, 2 fences (2 left)"),
        "{err}"
    );
    assert!(
        err.contains(
            "gvt_rs-GVTsim_64M on gvt-sim0: aperture 64M, high GM 188M, 4 fences (1 left)"
        ),
        "{err}"
    );
    assert!(!err.contains("GVTsim_128M on gvt-sim0: aperture"), "{err}");
    assert!(!err.contains("GVTsim_256M on gvt-sim0: aperture"), "{err}");
    assert!(
        err.contains(&format!(
            "{a} gvt_rs-GVTsim_128M on gvt-sim0: in use by qemu-system-x86 (pid 4242)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{b} gvt_rs-GVTsim_64M on gvt-sim0: idle")),
        "{err}"
    );
    assert!(err.contains("gvtctl destroy UUID"), "{err}");
    let (code, v) = t.json(&["create", "--type", "gvt_rs-GVTsim_256M"]);
    assert_eq!((code, v["error"]["kind"].as_str()), (4, Some("exhausted")));
    // The driver itself answering ENOSPC (stale count, fragmentation) is reported the same way.
    t.create(&["--type", "gvt_rs-GVTsim_64M"]);
    assert_eq!(t.avail("gvt-sim0", "gvt_rs-GVTsim_64M"), 0);
    std::fs::write(t.p("sys/class/mdev_bus/gvt-sim0/mdev_supported_types/gvt_rs-GVTsim_64M/available_instances"), "1\n").unwrap();
    t.cmd()
        .args(["create", "--type", "gvt_rs-GVTsim_64M"])
        .assert()
        .code(4)
        .stderr(contains(
            "no instances left for type gvt_rs-GVTsim_64M on gvt-sim0",
        ));
}

#[test]
fn permission_denied_says_needs_root() {
    use std::os::unix::fs::PermissionsExt;
    let t = gvt();
    let create = t.p("sys/class/mdev_bus/gvt-sim0/mdev_supported_types/gvt_rs-GVTsim_64M/create");
    std::fs::set_permissions(&create, std::fs::Permissions::from_mode(0o000)).unwrap();
    t.cmd()
        .args(["create", "--type", "gvt_rs-GVTsim_64M"])
        .assert()
        .code(6)
        .stderr(contains("permission denied"))
        .stderr(contains("run gvtctl as root"))
        .stderr(contains("/dev/vfio/N"));
    let (code, v) = t.json(&["create", "--type", "gvt_rs-GVTsim_64M"]);
    assert_eq!(
        (code, v["error"]["kind"].as_str()),
        (6, Some("permission-denied"))
    );
    // Definitions directory not writable.
    std::fs::set_permissions(t.p("etc/mdevctl.d"), std::fs::Permissions::from_mode(0o555)).unwrap();
    t.cmd()
        .args(["define", "--type", "gvt_rs-GVTsim_128M"])
        .assert()
        .code(6)
        .stderr(contains("run gvtctl as root"));
}

#[test]
fn device_that_never_appears_times_out() {
    let t = gvt();
    std::fs::write(
        t.p("sys/class/mdev_bus/gvt-sim0/mdev_supported_types/gvt_rs-GVTsim_64M/.sim-no-device"),
        "",
    )
    .unwrap();
    t.cmd()
        .args(["--timeout", "0.05", "create", "--type", "gvt_rs-GVTsim_64M"])
        .assert()
        .code(7)
        .stderr(contains("did not appear in /sys/bus/mdev/devices"))
        .stderr(contains("dmesg"));
    t.cmd().args(["--timeout", "-1", "list"]).assert().code(2);
}

#[test]
fn bad_weight_is_rejected_and_the_device_removed_again() {
    let t = gvt();
    t.cmd()
        .args([
            "create",
            "--type",
            "gvt_rs-GVTsim_64M",
            "--weight",
            "101",
            "--uuid",
            U1,
        ])
        .assert()
        .code(1)
        .stderr(contains("could not set attribute 'gvt/weight'"));
    assert!(!t.dev(U1).exists());
    assert_eq!(t.avail("gvt-sim0", "gvt_rs-GVTsim_64M"), 4);
    t.cmd()
        .args(["create", "--aperture", "64M", "--weight", "0"])
        .assert()
        .code(2);
}

// ---- list / info ----------------------------------------------------------------------

#[test]
fn list_shows_partition_group_and_users() {
    let t = all();
    let a = t.create(&["--aperture", "64M", "--uuid", U1]);
    let b = t.create(&["--type", "mtty-1", "--uuid", U2]);
    t.cmd()
        .args(["define", U3, "--type", "gvt_rs-GVTsim_256M", "--auto"])
        .assert()
        .success();
    t.cmd()
        .args(["sim", "hold", &a, "--pid", "777"])
        .assert()
        .success();
    let out = t.cmd().arg("list").assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    let ga = t.group_of(&a);
    let gb = t.group_of(&b);
    assert!(text.starts_with("UUID"), "{text}");
    let la = text.lines().find(|l| l.starts_with(&a)).expect("row a");
    assert!(
        la.contains("gvt_rs-GVTsim_64M") && la.contains("active") && la.contains("64M"),
        "{la}"
    );
    assert!(
        la.contains(&format!("/dev/vfio/{ga}")) && la.contains("qemu-system-x86_64(777)"),
        "{la}"
    );
    let lb = text.lines().find(|l| l.starts_with(&b)).expect("row b");
    assert!(
        lb.contains("mtty") && lb.contains(&format!("/dev/vfio/{gb}")) && lb.contains(" no "),
        "{lb}"
    );
    let lc = text.lines().find(|l| l.starts_with(U3)).expect("row c");
    assert!(lc.contains("stopped") && lc.ends_with("auto"), "{lc}");

    let (code, v) = t.json(&["list"]);
    assert_eq!(code, 0);
    let list = v["instances"].as_array().expect("instances");
    assert_eq!(list.len(), 3);
    let ia = list.iter().find(|i| i["uuid"] == a).expect("a");
    assert_eq!(ia["in_use"], true);
    assert_eq!(ia["holders"][0]["pid"], 777);
    assert_eq!(ia["holders"][0]["node"], format!("/dev/vfio/{ga}"));
    assert_eq!(ia["iommu_group"], ga.parse::<u64>().unwrap());
    assert_eq!(ia["vfio_group_node"], format!("/dev/vfio/{ga}"));
    let ic = list.iter().find(|i| i["uuid"] == U3).expect("c");
    assert_eq!(
        (ic["active"].as_bool(), ic["in_use"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(ic["definition"]["type"], "gvt_rs-GVTsim_256M");
    // Filters.
    let (_, v) = t.json(&["list", "--active"]);
    assert_eq!(v["instances"].as_array().map(Vec::len), Some(2));
    let (_, v) = t.json(&["list", "--defined"]);
    assert_eq!(v["instances"].as_array().map(Vec::len), Some(1));
    let (_, v) = t.json(&["list", "--parent", "mtty"]);
    assert_eq!(v["instances"][0]["uuid"], b);
}

#[test]
fn info_active_defined_unknown() {
    let t = gvt();
    let a = t.create(&["--aperture", "64M", "--weight", "3"]);
    t.cmd()
        .args(["info", &a])
        .assert()
        .success()
        .stdout(contains(
            "type:               gvt_rs-GVTsim_64M (GVTsim_64M)",
        ))
        .stdout(contains("gvt/aperture_size:  67108864 (64M)"))
        .stdout(contains("gvt/weight:         3"))
        .stdout(contains(
            "<hostdev mode='subsystem' type='mdev' model='vfio-pci'>",
        ));
    let (code, v) = t.json(&["info", &a]);
    assert_eq!(code, 0);
    for k in [
        "vgpu_id",
        "aperture_base",
        "aperture_size",
        "high_gm_base",
        "high_gm_size",
        "fence_base",
        "fence_count",
        "weight",
    ] {
        assert!(v["gvt"][k].is_u64(), "{k}: {v}");
    }
    assert_eq!(
        v["vmm_args"]["cloud_hypervisor"],
        format!("--device path=/sys/bus/mdev/devices/{a}/")
    );
    t.cmd()
        .args(["info", U3])
        .assert()
        .code(3)
        .stderr(contains(format!("no mediated device {U3}")))
        .stderr(contains("gvtctl list"));
    let (code, v) = t.json(&["info", U3]);
    assert_eq!(
        (code, v["error"]["kind"].as_str()),
        (3, Some("unknown-uuid"))
    );
    t.cmd().args(["info", "zzz"]).assert().code(2);
}

// ---- destroy ---------------------------------------------------------------------------

#[test]
fn destroy_removes_and_gives_resources_back() {
    let t = gvt();
    let a = t.create(&["--aperture", "128M"]);
    let g = t.group_of(&a);
    assert_eq!(t.avail("gvt-sim0", "gvt_rs-GVTsim_256M"), 0);
    t.cmd()
        .args(["destroy", &a])
        .assert()
        .success()
        .stdout(contains(format!(
            "destroyed {a} (gvt_rs-GVTsim_128M on gvt-sim0)"
        )));
    assert!(!t.dev(&a).exists());
    assert!(!t.p(&format!("dev/vfio/{g}")).exists());
    assert_eq!(t.avail("gvt-sim0", "gvt_rs-GVTsim_256M"), 1);
    t.cmd()
        .args(["destroy", &a])
        .assert()
        .code(3)
        .stderr(contains("no mediated device"));
    let b = t.create(&["--aperture", "64M"]);
    let (code, v) = t.json(&["destroy", &b]);
    assert_eq!(code, 0);
    assert_eq!(v["action"], "destroyed");
    assert_eq!(v["uuid"], b);
}

#[test]
fn destroy_refuses_while_held_without_hanging() {
    let t = gvt();
    let a = t.create(&["--aperture", "64M"]);
    t.cmd()
        .args([
            "sim",
            "hold",
            &a,
            "--pid",
            "4242",
            "--command",
            "cloud-hypervisor",
        ])
        .assert()
        .success();
    t.cmd()
        .args(["destroy", &a])
        .assert()
        .code(5)
        .stderr(contains(format!(
            "vGPU {a} is in use by cloud-hypervisor (pid 4242)"
        )))
        .stderr(contains("shut down the VM"));
    assert!(t.dev(&a).exists());
    let (code, v) = t.json(&["stop", &a]);
    assert_eq!((code, v["error"]["kind"].as_str()), (5, Some("busy")));
    // The driver refusing with EBUSY (a holder we cannot see) is reported the same way.
    let b = t.create(&["--aperture", "64M"]);
    std::fs::write(t.dev(&b).join(".sim-busy"), "").unwrap();
    t.cmd()
        .args(["destroy", &b])
        .assert()
        .code(5)
        .stderr(contains("refused removal with EBUSY"));
    assert!(t.dev(&b).exists());
}

#[test]
fn destroy_with_undefine_and_destroy_of_stopped_definition() {
    let t = gvt();
    let a = t.create(&["--aperture", "64M", "--define"]);
    t.cmd()
        .args(["destroy", &a])
        .assert()
        .success()
        .stdout(contains("still defined"));
    t.cmd()
        .args(["destroy", &a])
        .assert()
        .code(3)
        .stderr(contains("defined (for gvt-sim0) but not running"));
    t.cmd().args(["start", &a]).assert().success();
    t.cmd()
        .args(["destroy", &a, "--undefine"])
        .assert()
        .success()
        .stdout(contains("definition deleted"));
    assert!(!t.p(&format!("etc/mdevctl.d/gvt-sim0/{a}")).exists());
}

// ---- define / start / stop / autostart / undefine ---------------------------------------

#[test]
fn define_start_stop_autostart_undefine() {
    let t = gvt();
    let (code, v) = t.json(&["define", U1, "--aperture", "100M", "--weight", "5"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["definition"]["type"], "gvt_rs-GVTsim_128M");
    assert_eq!(v["definition"]["start"], "manual");
    assert_eq!(v["definition"]["attrs"][0]["gvt/weight"], "5");
    let path = t.p(&format!("etc/mdevctl.d/gvt-sim0/{U1}"));
    assert!(path.exists());
    assert!(!t.dev(U1).exists(), "define does not start");
    t.cmd()
        .args(["define", U1, "--aperture", "64M"])
        .assert()
        .code(8)
        .stderr(contains("already defined"));
    // start applies the attributes.
    let (code, v) = t.json(&["start", U1]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["gvt"]["weight"], 5);
    assert_eq!(t.avail("gvt-sim0", "gvt_rs-GVTsim_128M"), 1);
    t.cmd().args(["start", U1]).assert().code(8);
    // stop keeps the definition.
    t.cmd()
        .args(["stop", U1])
        .assert()
        .success()
        .stdout(contains("stopped"));
    assert!(!t.dev(U1).exists() && path.exists());
    // autostart toggles the file's start field.
    t.cmd().args(["autostart", U1, "on"]).assert().success();
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("\"start\": \"auto\""));
    let (_, v) = t.json(&["autostart", U1, "off"]);
    assert_eq!(v["definition"]["start"], "manual");
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("\"start\": \"manual\""));
    // undefine.
    let (code, v) = t.json(&["undefine", U1]);
    assert_eq!(code, 0);
    assert_eq!(v["undefined"][0]["uuid"], U1);
    assert!(!path.exists());
    t.cmd()
        .args(["undefine", U1])
        .assert()
        .code(3)
        .stderr(contains("not defined"));
    t.cmd().args(["start", U1]).assert().code(3);
    t.cmd().args(["autostart", U1, "on"]).assert().code(3);
    t.cmd().args(["start"]).assert().code(2);
}

#[test]
fn define_an_active_device_and_a_random_uuid() {
    let t = gvt();
    let a = t.create(&["--aperture", "64M"]);
    t.cmd()
        .args(["define", &a, "--parent", "mtty"])
        .assert()
        .code(2)
        .stderr(contains("is active on gvt-sim0"));
    let (code, v) = t.json(&["define", &a, "--auto"]);
    assert_eq!(code, 0);
    assert_eq!(v["definition"]["type"], "gvt_rs-GVTsim_64M");
    assert_eq!(v["definition"]["parent"], "gvt-sim0");
    let out = t
        .cmd()
        .args(["define", "--type", "gvt_rs-GVTsim_256M"])
        .output()
        .unwrap();
    let u = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(libgvtctl::Uuid::parse(&u).is_ok(), "{u}");
    assert!(t.p(&format!("etc/mdevctl.d/gvt-sim0/{u}")).exists());
}

#[test]
fn define_for_absent_parent_then_start_says_load_the_module() {
    let t = Tree::new(&[]);
    t.cmd()
        .args([
            "define",
            U1,
            "--parent",
            "gvt-sim0",
            "--type",
            "gvt_rs-GVTsim_64M",
            "--auto",
        ])
        .assert()
        .success();
    assert!(t.p(&format!("etc/mdevctl.d/gvt-sim0/{U1}")).exists());
    t.cmd()
        .args(["start", U1])
        .assert()
        .code(3)
        .stderr(contains("modprobe gvt_rs"));
    t.cmd()
        .args(["define", U2, "--parent", "gvt-sim0", "--aperture", "64M"])
        .assert()
        .code(3);
}

#[test]
fn mdevctl_written_definitions_are_used_as_is() {
    let t = all();
    let d = t.p("etc/mdevctl.d/0000:00:02.0");
    std::fs::create_dir_all(&d).unwrap();
    // What mdevctl writes (older versions omit attrs).
    std::fs::write(
        d.join(U1),
        "{\n  \"mdev_type\": \"i915-GVTg_V5_4\",\n  \"start\": \"manual\"\n}",
    )
    .unwrap();
    std::fs::write(
        d.join(U2),
        "{\n  \"mdev_type\": \"i915-GVTg_V5_8\",\n  \"start\": \"auto\",\n  \"attrs\": []\n}",
    )
    .unwrap();
    // Non-definitions are ignored, malformed ones skipped (and reported when named).
    std::fs::create_dir_all(t.p("etc/mdevctl.d/scripts.d/callouts")).unwrap();
    std::fs::write(d.join("README"), "x").unwrap();
    std::fs::write(d.join(U3), "{not json").unwrap();
    let (_, v) = t.json(&["list", "--defined"]);
    let list = v["instances"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let i1 = list.iter().find(|i| i["uuid"] == U1).unwrap();
    assert_eq!(i1["definition"]["start"], "manual");
    assert_eq!(i1["partition"]["aperture"], 128u64 << 20);
    t.cmd().args(["start", U1]).assert().success();
    assert_eq!(
        std::fs::read_link(t.dev(U1).join("mdev_type"))
            .unwrap()
            .file_name()
            .unwrap(),
        "i915-GVTg_V5_4"
    );
    t.cmd()
        .args(["start", U3, "--parent", "0000:00:02.0"])
        .assert()
        .code(1)
        .stderr(contains("invalid mdevctl definition"));
    // And gvtctl's files are what mdevctl writes: same shape read back.
    t.cmd().args(["autostart", U1, "on"]).assert().success();
    assert_eq!(
        std::fs::read_to_string(d.join(U1)).unwrap(),
        "{\n  \"mdev_type\": \"i915-GVTg_V5_4\",\n  \"start\": \"auto\",\n  \"attrs\": []\n}"
    );
}

#[test]
fn start_auto_starts_auto_definitions_once() {
    let t = gvt();
    t.cmd()
        .args([
            "define",
            U1,
            "--type",
            "gvt_rs-GVTsim_64M",
            "--auto",
            "--weight",
            "2",
        ])
        .assert()
        .success();
    t.cmd()
        .args(["define", U2, "--type", "gvt_rs-GVTsim_128M", "--auto"])
        .assert()
        .success();
    t.cmd()
        .args(["define", U3, "--type", "gvt_rs-GVTsim_64M"])
        .assert()
        .success();
    let (code, v) = t.json(&["start", "--auto", "--parent", "gvt-sim0"]);
    assert_eq!(code, 0, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    assert!(r
        .iter()
        .all(|x| x["status"] == "started" && x["error"].is_null()));
    assert!(t.dev(U1).exists() && t.dev(U2).exists() && !t.dev(U3).exists());
    assert_eq!(
        std::fs::read_to_string(t.dev(U1).join("gvt/weight"))
            .unwrap()
            .trim(),
        "2"
    );
    // Idempotent.
    t.cmd()
        .args(["start", "--auto"])
        .assert()
        .success()
        .stdout(contains(format!("already active {U1}")));
    // A failure (no room) is reported per definition and in the exit code.
    t.cmd().args(["stop", U2]).assert().success();
    t.create(&["--type", "gvt_rs-GVTsim_64M"]);
    t.create(&["--type", "gvt_rs-GVTsim_64M"]);
    t.create(&["--type", "gvt_rs-GVTsim_64M"]);
    let (code, v) = t.json(&["start", "--auto"]);
    assert_eq!(code, 4);
    let f = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["uuid"] == U2)
        .unwrap()
        .clone();
    assert_eq!(f["status"], "failed");
    assert_eq!(f["error"]["kind"], "exhausted");
}

// ---- vmm-args ---------------------------------------------------------------------------

#[test]
fn vmm_args_exact() {
    let t = gvt();
    t.create(&["--aperture", "64M", "--uuid", U1]);
    t.cmd()
        .args(["vmm-args", U1, "--vmm", "qemu"])
        .assert()
        .success()
        .stdout(format!(
            "-device vfio-pci,sysfsdev=/sys/bus/mdev/devices/{U1}\n"
        ));
    t.cmd()
        .args(["vmm-args", U1, "--vmm", "cloud-hypervisor"])
        .assert()
        .success()
        .stdout(format!("--device path=/sys/bus/mdev/devices/{U1}/\n"));
    t.cmd()
        .args(["vmm-args", U1, "--vmm", "libvirt"])
        .assert()
        .success()
        .stdout(format!(
            "<hostdev mode='subsystem' type='mdev' model='vfio-pci'>\n  <source>\n    <address uuid='{U1}'/>\n  </source>\n</hostdev>\n"
        ));
    let (code, v) = t.json(&["vmm-args", U1]);
    assert_eq!(code, 0);
    assert_eq!(
        v["qemu"],
        format!("-device vfio-pci,sysfsdev=/sys/bus/mdev/devices/{U1}")
    );
    assert!(v["libvirt"]
        .as_str()
        .unwrap()
        .contains(&format!("<address uuid='{U1}'/>")));
    let (_, v) = t.json(&["vmm-args", U1, "--vmm", "cloud-hypervisor"]);
    assert_eq!(
        v["cloud_hypervisor"],
        format!("--device path=/sys/bus/mdev/devices/{U1}/")
    );
    t.cmd().args(["vmm-args", U2]).assert().code(3);
    t.cmd()
        .args(["vmm-args", U1, "--vmm", "xen"])
        .assert()
        .code(2);
}

// ---- misc ------------------------------------------------------------------------------

#[test]
fn completions_help_and_env_root() {
    let t = gvt();
    t.cmd()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(contains("_gvtctl()"))
        .stdout(contains("vmm-args"));
    t.cmd()
        .args(["completions", "zsh"])
        .assert()
        .success()
        .stdout(contains("#compdef gvtctl"));
    t.cmd()
        .arg("--help")
        .assert()
        .success()
        .stdout(contains("Exit codes:"))
        .stdout(contains("gvtctl create --aperture 100M"))
        .stdout(contains("\n  sim ").not());
    // GVTCTL_ROOT is what the udev rule relies on in tests.
    let mut c = assert_cmd::Command::cargo_bin("gvtctl").unwrap();
    c.env("GVTCTL_ROOT", t.root())
        .args(["types", "--json"])
        .assert()
        .success()
        .stdout(contains("gvt_rs-GVTsim_64M"));
}

#[test]
fn udev_match_group_only_for_gvt_rs() {
    let t = all();
    let a = t.create(&["--aperture", "64M"]);
    let m = t.create(&["--type", "mtty-1"]);
    t.cmd()
        .args(["udev-match-group", &t.group_of(&a)])
        .assert()
        .success()
        .stdout(format!("{a}\n"));
    t.cmd()
        .args(["udev-match-group", &t.group_of(&m)])
        .assert()
        .code(1);
    t.cmd().args(["udev-match-group", "999"]).assert().code(1);
    t.cmd()
        .args(["udev-match-group", "../../etc"])
        .assert()
        .code(1);
}

#[test]
fn sim_init_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = assert_cmd::Command::cargo_bin("gvtctl").unwrap();
    c.arg("--root")
        .arg(dir.path())
        .args(["sim", "init", "--fixture", "i915,mtty"])
        .assert()
        .success();
    let mut c = assert_cmd::Command::cargo_bin("gvtctl").unwrap();
    c.arg("--root")
        .arg(dir.path())
        .args(["types"])
        .assert()
        .success()
        .stdout(contains("i915-GVTg_V5_1"))
        .stdout(contains("mtty-2"));
    let mut c = assert_cmd::Command::cargo_bin("gvtctl").unwrap();
    c.arg("--root")
        .arg(dir.path())
        .args(["sim", "init", "--fixture", "nvidia"])
        .assert()
        .code(2);
    let _ = Fixture::GvtRs;
}

// ---- PCI-function parents --------------------------------------------------------------

/// A vGPU on a PCI parent (a function bound to gvt_rs, `0000:00:04.0`) next to the
/// virtual parent: found, created, listed, defined, stopped and started, destroyed by
/// the same commands; the definition goes to the PCI parent's directory; the VMM
/// arguments are the same form as for any vGPU (by UUID).
#[test]
fn pci_parent_create_list_define_vmm_args() {
    const BDF: &str = "0000:00:04.0";
    let t = Tree::new(&[Fixture::GvtRs, Fixture::GvtRsPci]);
    let (code, v) = t.json(&["types", "--parent", BDF]);
    assert_eq!(code, 0);
    let types = v["types"].as_array().expect("types");
    assert_eq!(types.len(), 4);
    assert!(types.iter().all(|t| t["parent"] == BDF), "{types:?}");
    let out = t
        .cmd()
        .args(["create", "--parent", BDF, "--aperture", "64M"])
        .args(["--uuid", U1, "--define"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        text.contains(&format!("created gvt_rs-GVTsim_64M on {BDF}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("defined in /etc/mdevctl.d/{BDF}/{U1}")),
        "{text}"
    );
    assert!(t.p(&format!("etc/mdevctl.d/{BDF}/{U1}")).is_file());
    // The device is the PCI function's child; only its parent's capacity went.
    let canon = std::fs::canonicalize(t.dev(U1)).unwrap();
    assert!(
        canon.ends_with(format!("sys/devices/pci0000:00/{BDF}/{U1}")),
        "{}",
        canon.display()
    );
    assert_eq!(t.avail(BDF, "gvt_rs-GVTsim_64M"), 3);
    assert_eq!(t.avail("gvt-sim0", "gvt_rs-GVTsim_64M"), 4);
    // One on the virtual parent too: each parent places its own vGPUs.
    t.create(&["--parent", "gvt-sim0", "--aperture", "64M", "--uuid", U2]);
    let (_, v) = t.json(&["list"]);
    let list = v["instances"].as_array().unwrap();
    let parent_of = |u: &str| {
        list.iter().find(|i| i["uuid"] == u).unwrap()["parent"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(parent_of(U1), BDF);
    assert_eq!(parent_of(U2), "gvt-sim0");
    for u in [U1, U2] {
        let i = list.iter().find(|i| i["uuid"] == u).unwrap();
        assert_eq!(i["gvt"]["aperture_base"], 0, "{u}");
        assert_eq!(i["gvt"]["vgpu_id"], 1, "{u}");
    }
    let (_, v) = t.json(&["list", "--parent", BDF]);
    assert_eq!(v["instances"].as_array().map(Vec::len), Some(1));
    let rows = t.cmd().arg("list").assert().success();
    let rows = String::from_utf8_lossy(&rows.get_output().stdout).to_string();
    let r1 = rows.lines().find(|l| l.starts_with(U1)).expect("row");
    assert!(r1.contains(BDF) && r1.ends_with("auto"), "{r1}");
    // VMM arguments name the vGPU by UUID, whatever its parent.
    t.cmd()
        .args(["vmm-args", U1, "--vmm", "qemu"])
        .assert()
        .success()
        .stdout(format!(
            "-device vfio-pci,sysfsdev=/sys/bus/mdev/devices/{U1}\n"
        ));
    t.cmd()
        .args(["vmm-args", U1, "--vmm", "libvirt"])
        .assert()
        .success()
        .stdout(contains(format!("<address uuid='{U1}'/>")));
    // Stop and start from the definition (mdevctl's layout: the parent's directory).
    t.cmd().args(["stop", U1]).assert().success();
    assert!(!t.dev(U1).exists());
    assert_eq!(t.avail(BDF, "gvt_rs-GVTsim_64M"), 4);
    t.cmd().args(["start", U1]).assert().success();
    let canon = std::fs::canonicalize(t.dev(U1)).unwrap();
    assert!(canon.ends_with(format!("sys/devices/pci0000:00/{BDF}/{U1}")));
    let (code, _) = t.json(&["start", "--parent", BDF, "--auto"]);
    assert_eq!(code, 0);
    t.cmd()
        .args(["destroy", U1, "--undefine"])
        .assert()
        .success();
    assert!(!t.dev(U1).exists());
    assert!(!t.p(&format!("etc/mdevctl.d/{BDF}/{U1}")).exists());
    assert_eq!(t.avail(BDF, "gvt_rs-GVTsim_64M"), 4);
    // Without --parent, vGPUs go wherever a type fits: both parents fill up.
    for _ in 0..7 {
        t.create(&["--aperture", "64M"]);
    }
    assert_eq!(t.avail(BDF, "gvt_rs-GVTsim_64M"), 0);
    assert_eq!(t.avail("gvt-sim0", "gvt_rs-GVTsim_64M"), 0);
    let (code, v) = t.json(&["create", "--aperture", "64M"]);
    assert_ne!(code, 0);
    let existing = v["error"]["details"]["existing"].to_string();
    assert!(
        existing.contains(BDF) && existing.contains("gvt-sim0"),
        "{v}"
    );
}
