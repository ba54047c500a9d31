//! Shared helpers: a simulated tree per test and the real gvtctl binary.
#![allow(dead_code)]

use assert_cmd::Command;
use libgvtctl::fake_sysfs::{self, Fixture};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

pub struct Tree {
    pub dir: TempDir,
}

impl Tree {
    pub fn new(fixtures: &[Fixture]) -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        fake_sysfs::init(dir.path(), fixtures).expect("sim init");
        Tree { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("gvtctl").expect("binary");
        c.arg("--root").arg(self.root()).env_remove("GVTCTL_ROOT");
        c
    }

    /// Run with --json and the given args; return (exit code, parsed stdout).
    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        let out = self.cmd().arg("--json").args(args).output().expect("run");
        let code = out.status.code().unwrap_or(-1);
        let text = String::from_utf8_lossy(&out.stdout);
        let v = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {text}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (code, v)
    }

    /// Create by args, return the UUID (first line of human output).
    pub fn create(&self, args: &[&str]) -> String {
        let out = self.cmd().arg("create").args(args).output().expect("run");
        assert!(
            out.status.success(),
            "create {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    pub fn avail(&self, parent: &str, ty: &str) -> u32 {
        std::fs::read_to_string(self.p(&format!(
            "sys/class/mdev_bus/{parent}/mdev_supported_types/{ty}/available_instances"
        )))
        .expect("available_instances")
        .trim()
        .parse()
        .expect("number")
    }

    pub fn dev(&self, uuid: &str) -> PathBuf {
        self.p(&format!("sys/bus/mdev/devices/{uuid}"))
    }

    pub fn group_of(&self, uuid: &str) -> String {
        std::fs::read_link(self.dev(uuid).join("iommu_group"))
            .expect("iommu_group")
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned()
    }
}

pub fn gvt() -> Tree {
    Tree::new(&[Fixture::GvtRs])
}

pub fn all() -> Tree {
    Tree::new(&[Fixture::GvtRs, Fixture::I915, Fixture::Mtty])
}

pub const U1: &str = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
pub const U2: &str = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1002";
pub const U3: &str = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1003";
