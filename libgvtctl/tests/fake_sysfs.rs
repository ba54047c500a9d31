//! The library against the simulated mdev core, and through a custom `Sysfs`.

use libgvtctl::fake_sysfs::{self, FakeMdevSysfs, Fixture};
use libgvtctl::*;
use std::io;
use std::path::{Path, PathBuf};

fn tree(f: &[Fixture]) -> (tempfile::TempDir, Gvtctl) {
    let d = tempfile::tempdir().unwrap();
    fake_sysfs::init(d.path(), f).unwrap();
    let ctl = Gvtctl::new(d.path());
    (d, ctl)
}

fn req(aperture: u64) -> CreateRequest {
    CreateRequest {
        partition: PartitionRequest {
            aperture: Some(aperture << 20),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn selection_order_smallest_then_gvt_rs_then_parent() {
    let (_d, ctl) = tree(&[Fixture::GvtRs, Fixture::I915]);
    let pick = |mib: u64, high: Option<u64>| {
        ctl.select_type(
            None,
            None,
            &PartitionRequest {
                aperture: Some(mib << 20),
                high_gm: high,
                fences: None,
            },
            true,
            false,
        )
        .map(|t| t.id)
    };
    assert_eq!(pick(1, None).unwrap(), "gvt_rs-GVTsim_32M");
    assert_eq!(pick(33, None).unwrap(), "gvt_rs-GVTsim_64M");
    assert_eq!(pick(65, None).unwrap(), "gvt_rs-GVTsim_128M");
    assert_eq!(pick(64, Some(700 << 20)).unwrap(), "gvt_rs-GVTsim_256M");
    assert_eq!(pick(64, Some(753 << 20)).unwrap(), "i915-GVTg_V5_2");
    assert_eq!(pick(300, None).unwrap(), "i915-GVTg_V5_1");
    assert_eq!(pick(64, Some(2 << 30)).unwrap(), "i915-GVTg_V5_1");
    assert!(matches!(pick(1024, None), Err(Error::NoTypeFits { .. })));
}

#[test]
fn create_destroy_roundtrip_restores_counts() {
    let (d, ctl) = tree(&[Fixture::GvtRs, Fixture::I915, Fixture::Mtty]);
    let before: Vec<_> = ctl
        .types(None)
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.available_instances))
        .collect();
    let mut made = Vec::new();
    for _ in 0..4 {
        made.push(ctl.create(&req(64)).unwrap());
    }
    assert!(matches!(
        ctl.create(&CreateRequest {
            parent: Some("gvt-sim0".into()),
            ..req(64)
        }),
        Err(Error::Exhausted { .. })
    ));
    assert_eq!(ctl.instances().len(), 4);
    // Partitions do not overlap.
    let mut bases: Vec<u64> = made
        .iter()
        .map(|i| i.gvt.as_ref().unwrap()["aperture_base"].as_u64().unwrap())
        .collect();
    bases.sort();
    assert_eq!(bases, vec![0, 64 << 20, 128 << 20, 192 << 20]);
    for i in &made {
        ctl.destroy(&i.uuid).unwrap();
    }
    let after: Vec<_> = ctl
        .types(None)
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.available_instances))
        .collect();
    assert_eq!(before, after);
    assert!(std::fs::read_dir(d.path().join("sys/kernel/iommu_groups"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn start_auto_reports_each_definition() {
    let (_d, ctl) = tree(&[Fixture::Mtty]);
    for (u, t) in [
        ("00000000-0000-4000-8000-000000000001", "mtty-2"),
        ("00000000-0000-4000-8000-000000000002", "mtty-2"),
        ("00000000-0000-4000-8000-000000000003", "mtty-2"),
    ] {
        ctl.define(&DefineRequest {
            uuid: Some(Uuid::parse(u).unwrap()),
            parent: None,
            type_id: Some(t.into()),
            partition: PartitionRequest::default(),
            weight: None,
            display: None,
            start: StartMode::Auto,
        })
        .unwrap();
    }
    let r = ctl.start_auto(Some("mtty"));
    let ok = r
        .iter()
        .filter(|o| matches!(o.result, Ok(StartStatus::Started)))
        .count();
    let full = r
        .iter()
        .filter(|o| matches!(o.result, Err(Error::Exhausted { .. })))
        .count();
    assert_eq!((ok, full), (2, 1), "4 ports: two dual-port devices fit");
}

/// The real sysfs with /proc unreadable (not root): holders unknown, not "idle".
struct NoProc(FakeMdevSysfs);

impl Sysfs for NoProc {
    fn read_to_string(&self, p: &Path) -> io::Result<String> {
        self.0.read_to_string(p)
    }
    fn write(&self, p: &Path, d: &[u8]) -> io::Result<()> {
        self.0.write(p, d)
    }
    fn write_file(&self, p: &Path, d: &[u8]) -> io::Result<()> {
        self.0.write_file(p, d)
    }
    fn read_dir(&self, p: &Path) -> io::Result<Vec<String>> {
        if p.ends_with("fd") {
            return Err(io::Error::from_raw_os_error(13));
        }
        self.0.read_dir(p)
    }
    fn read_link(&self, p: &Path) -> io::Result<PathBuf> {
        self.0.read_link(p)
    }
    fn exists(&self, p: &Path) -> bool {
        self.0.exists(p)
    }
    fn is_dir(&self, p: &Path) -> bool {
        self.0.is_dir(p)
    }
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        self.0.create_dir_all(p)
    }
    fn remove_file(&self, p: &Path) -> io::Result<()> {
        self.0.remove_file(p)
    }
}

#[test]
fn unreadable_proc_means_in_use_unknown() {
    let d = tempfile::tempdir().unwrap();
    fake_sysfs::init(d.path(), &[Fixture::GvtRs]).unwrap();
    let ctl = Gvtctl::with_sysfs(d.path(), Box::new(NoProc(FakeMdevSysfs::new(d.path()))));
    let i = ctl.create(&req(64)).unwrap();
    fake_sysfs::hold(d.path(), 99, "qemu", i.vfio_group_node.as_deref().unwrap()).unwrap();
    let i = ctl.instance(&i.uuid).unwrap();
    assert_eq!(i.in_use, None);
    assert!(i.holders.is_empty());
    // With full visibility the same holder is found.
    let ctl = Gvtctl::new(d.path());
    let i = ctl.instance(&i.uuid).unwrap();
    assert_eq!(i.in_use, Some(true));
    assert_eq!(i.holders[0].command, "qemu");
}

#[test]
fn sim_is_never_used_on_slash() {
    assert!(!fake_sysfs::is_sim_root(Path::new("/")));
    assert!(fake_sysfs::init(Path::new("/"), &[]).is_err());
}

/// The gvt-rs fixture behaves like the driver with aperture_mb=256 gm_mb=1024 (checked
/// against the real one in tests/vm/tests/gvtctl.rs): its attribute set, best-fit
/// placement, and the limit of 8 vGPUs.
#[test]
fn gvt_rs_fixture_is_the_real_driver_layout() {
    let (d, ctl) = tree(&[Fixture::GvtRs]);
    assert!(d
        .path()
        .join("sys/devices/virtual/gvt_rs/gvt-sim0/mdev_supported_types/gvt_rs-GVTsim_32M")
        .is_dir());
    let a = ctl.create(&req(128)).unwrap();
    let keys: Vec<&str> = a.gvt.as_ref().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "aperture_base",
            "aperture_size",
            "ballooned",
            "display",
            "dmabuf",
            "fence_base",
            "fence_count",
            "high_gm_base",
            "high_gm_size",
            "migration",
            "state",
            "stats",
            "vgpu_id",
            "weight"
        ]
    );
    let g = |i: &Instance, k: &str| i.gvt.as_ref().unwrap()[k].as_u64().unwrap();
    assert_eq!(
        (g(&a, "high_gm_base"), g(&a, "fence_count"), g(&a, "weight")),
        (256 << 20, 8, 8)
    );
    // With A gone the holes are [0,128M) and [192M,256M): best fit (not first fit) puts
    // a 32M into the smaller one.
    let b = ctl.create(&req(64)).unwrap();
    ctl.destroy(&a.uuid).unwrap();
    let c = ctl.create(&req(32)).unwrap();
    assert_eq!(
        (g(&b, "aperture_base"), g(&c, "aperture_base")),
        (128 << 20, 192 << 20)
    );
    ctl.destroy(&b.uuid).unwrap();
    ctl.destroy(&c.uuid).unwrap();
    // 8 vGPUs at most, whatever memory is left.
    let made: Vec<Instance> = (0..8).map(|_| ctl.create(&req(32)).unwrap()).collect();
    assert!(matches!(ctl.create(&req(32)), Err(Error::Exhausted { .. })));
    let ids: Vec<u64> = made.iter().map(|i| g(i, "vgpu_id")).collect();
    assert_eq!(ids, (1..=8).collect::<Vec<_>>());
}

/// A PCI-function parent (`0000:00:04.0`, bound to gvt_rs) next to the virtual one:
/// discovered through `/sys/class/mdev_bus`, each with its own capacity, vGPUs named
/// by their parent, definitions under the parent's name.
#[test]
fn pci_parent_next_to_the_virtual_one() {
    const BDF: &str = "0000:00:04.0";
    let (d, ctl) = tree(&[Fixture::GvtRs, Fixture::GvtRsPci]);
    let mut names = ctl.parent_names();
    names.sort();
    assert_eq!(names, [BDF, "gvt-sim0"]);
    let of = |p: &str| -> Vec<(String, Option<u32>)> {
        ctl.types(Some(p))
            .unwrap()
            .into_iter()
            .map(|t| (t.id, t.available_instances))
            .collect()
    };
    assert_eq!(of(BDF), of("gvt-sim0"));
    let i = ctl
        .create(&CreateRequest {
            parent: Some(BDF.into()),
            define: Some(StartMode::Auto),
            ..req(128)
        })
        .unwrap();
    assert_eq!(i.parent, BDF);
    assert_eq!(i.type_id, "gvt_rs-GVTsim_128M");
    assert_eq!(
        i.definition.as_ref().map(|d| d.path.clone()),
        Some(format!("/etc/mdevctl.d/{BDF}/{}", i.uuid))
    );
    assert!(d
        .path()
        .join("etc/mdevctl.d")
        .join(BDF)
        .join(i.uuid.to_string())
        .is_file());
    assert_eq!(
        i.vmm_args.qemu,
        format!("-device vfio-pci,sysfsdev=/sys/bus/mdev/devices/{}", i.uuid)
    );
    let left = |p: &str| {
        ctl.types(Some(p))
            .unwrap()
            .into_iter()
            .find(|t| t.id == "gvt_rs-GVTsim_128M")
            .unwrap()
            .available_instances
    };
    assert_eq!((left(BDF), left("gvt-sim0")), (Some(1), Some(2)));
    let listed = ctl.instance(&i.uuid).unwrap();
    assert_eq!(listed.parent, BDF);
    ctl.destroy(&i.uuid).unwrap();
    assert_eq!(left(BDF), Some(2));
}
