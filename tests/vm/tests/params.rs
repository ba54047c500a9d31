//! The gvt_rs module parameters (issue 20): every invalid value fails the
//! load with its own log line and leaves no module behind, and non-default
//! `fences` / `max_vgpus` change what a user of the parent sees (the types,
//! their fences, how many vGPUs fit).  `hang_threshold` is exercised by
//! `submission_hanging_vgpu_is_reset_alone_and_failed_at_the_limit` (loaded
//! at 2; the guilty vGPU must fail at exactly 2 hangs).  The kernel's Rust
//! module parameters are not in sysfs: these tests load the module
//! themselves and load it again with [`PARAMS`] when they end.

use std::fs;
use std::path::Path;

use gvt_vmtests::gvt::{attrs, available, reload, LoadedWith, PARAMS, PARENT};
use gvt_vmtests::{types_of, Mdev};

/// [`PARAMS`] with each `key=value` of `kvs` in place of (or added to) its `key=...`.
fn params_with(kvs: &[&str]) -> Vec<String> {
    let key = |p: &str| p.split('=').next().unwrap_or("").to_string();
    let mut v: Vec<String> = PARAMS.iter().map(|p| p.to_string()).collect();
    for kv in kvs {
        v.retain(|p| key(p) != key(kv));
        v.push(kv.to_string());
    }
    v
}

fn load_with(kvs: &[&str]) -> LoadedWith {
    LoadedWith::new(
        &params_with(kvs)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
}

fn description(ty: &str) -> String {
    fs::read_to_string(format!(
        "/sys/class/mdev_bus/{PARENT}/mdev_supported_types/{ty}/description"
    ))
    .unwrap()
}

#[test]
#[ignore = "runs inside the VM rig"]
fn params_invalid_values_fail_the_load_with_a_log_line() {
    let cases = [
        ("aperture_mb=48", "aperture_mb=48 is invalid"),
        ("aperture_mb=8", "aperture_mb=8 is invalid"),
        ("aperture_mb=8192", "aperture_mb=8192 is invalid"),
        ("gm_mb=5000", "gm_mb=5000 is invalid"),
        ("gm_mb=256", "gm_mb=256 is invalid"),
        ("fences=0", "fences=0 is invalid"),
        ("fences=17", "fences=17 is invalid"),
        ("max_vgpus=0", "max_vgpus=0 is invalid"),
        ("max_vgpus=65", "max_vgpus=65 is invalid"),
        ("hang_threshold=0", "hang_threshold=0 is invalid"),
        ("hang_threshold=1001", "hang_threshold=1001 is invalid"),
    ];
    let _restore = LoadedWith::new(&PARAMS);
    for (kv, line) in cases {
        let p = params_with(&[kv]);
        let p: Vec<&str> = p.iter().map(String::as_str).collect();
        match reload(&p) {
            Ok(()) => panic!("insmod gvt_rs {p:?} succeeded; {kv} must be refused"),
            Err(log) => {
                assert!(
                    log.contains(line),
                    "insmod gvt_rs {p:?} failed without the line {line:?}; the kernel said:\n{log}"
                );
                println!(
                    "{kv}: refused: {}",
                    log.lines().find(|l| l.contains(line)).unwrap().trim()
                );
            }
        }
        assert!(
            !Path::new("/sys/module/gvt_rs").exists(),
            "{kv}: no module is left loaded"
        );
        assert!(
            !Path::new("/sys/class/mdev_bus").join(PARENT).exists(),
            "{kv}: no parent is left registered"
        );
    }
    // The boundaries themselves load.
    for kv in [
        "fences=1",
        "max_vgpus=1",
        "max_vgpus=64",
        "hang_threshold=1000",
        "hang_threshold=1",
    ] {
        let p = params_with(&[kv]);
        reload(&p.iter().map(String::as_str).collect::<Vec<_>>())
            .unwrap_or_else(|log| panic!("{kv} must load:\n{log}"));
    }
}

#[test]
#[ignore = "runs inside the VM rig"]
fn params_fences_and_max_vgpus_change_the_types() {
    // Defaults (aperture 256 MiB, 16 fences, 8 vGPUs): four types, the
    // 32 MiB one with 2 fences, the 64 MiB one with 4.
    {
        let _m = load_with(&[]);
        assert_eq!(
            types_of(PARENT),
            [
                "gvt_rs-GVTsim_128M",
                "gvt_rs-GVTsim_256M",
                "gvt_rs-GVTsim_32M",
                "gvt_rs-GVTsim_64M"
            ]
        );
        assert!(
            description("gvt_rs-GVTsim_64M").contains("fence: 4\n"),
            "{}",
            description("gvt_rs-GVTsim_64M")
        );
    }
    // fences=4: eight instances would get no fence, so no 32 MiB type; a
    // 64 MiB vGPU has one fence, and they do not overlap.
    {
        let _m = load_with(&["fences=4"]);
        assert_eq!(
            types_of(PARENT),
            [
                "gvt_rs-GVTsim_128M",
                "gvt_rs-GVTsim_256M",
                "gvt_rs-GVTsim_64M"
            ]
        );
        assert!(
            description("gvt_rs-GVTsim_64M").contains("fence: 1\n"),
            "{}",
            description("gvt_rs-GVTsim_64M")
        );
        let v: Vec<Mdev> = (0..4)
            .map(|_| Mdev::create(PARENT, "gvt_rs-GVTsim_64M").expect("a 64M vGPU"))
            .collect();
        let mut fences: Vec<(u64, u64)> = v
            .iter()
            .map(|m| (attrs(m).fence_base, attrs(m).fence_count))
            .collect();
        fences.sort();
        assert_eq!(
            fences,
            [(0, 1), (1, 1), (2, 1), (3, 1)],
            "the four fences, one each"
        );
        assert!(
            available().iter().all(|(_, n)| *n == 0),
            "nothing else fits: {:?}",
            available()
        );
        drop(v);
    }
    // max_vgpus=2: only the types of at most two instances remain (no 32 or
    // 64 MiB type); two vGPUs fill the parent.
    {
        let _m = load_with(&["max_vgpus=2"]);
        assert_eq!(
            types_of(PARENT),
            ["gvt_rs-GVTsim_128M", "gvt_rs-GVTsim_256M"]
        );
        let a = Mdev::create(PARENT, "gvt_rs-GVTsim_128M").expect("first 128M vGPU");
        let b = Mdev::create(PARENT, "gvt_rs-GVTsim_128M").expect("second 128M vGPU");
        assert!(
            available().iter().all(|(_, n)| *n == 0),
            "max_vgpus=2 reached: {:?}",
            available()
        );
        assert!(
            Mdev::create(PARENT, "gvt_rs-GVTsim_128M").is_err(),
            "a third vGPU is refused"
        );
        drop((a, b));
    }
}
