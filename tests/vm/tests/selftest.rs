//! The rig's own self-check (`cargo xtask test` runs it and requires the
//! rig to FAIL these runs): a test that fails must fail the run, and a run
//! that passes its tests but WARNs in the kernel must fail too.  Normal runs
//! skip `rig_selftest_*`.

#[test]
#[ignore = "runs inside the VM rig"]
fn rig_selftest_failing_test() {
    let exit_status = std::process::Command::new("false").status().expect("run false");
    assert!(exit_status.success(), "deliberate failure: the rig must report this run as failed");
}

#[test]
#[ignore = "runs inside the VM rig"]
fn rig_selftest_passing_test() {
    assert!(std::path::Path::new("/sys/module/vfio").exists(), "vfio is loaded in the guest");
}
