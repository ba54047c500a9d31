//! A fake mdev sysfs tree (the kernel's mdev core simulated over a plain directory tree;
//! not the GPU model, which is gvt-core's `sim.rs`), for tests and demos without the
//! driver. [`init`] builds a tree with parents shaped like gvt-rs (`gvt-sim0`, its virtual
//! parent, and `0000:00:04.0`, a PCI function bound to it), i915 GVT-g (`0000:00:02.0`,
//! its four `i915-GVTg_V5_*` types) and the `mtty` sample;
//! [`FakeMdevSysfs`] is a [`Sysfs`] that reacts to writes as the kernel does:
//!
//! - `<type>/create` ← UUID: EINVAL for a bad UUID, EEXIST if taken, ENOSPC when
//!   `available_instances` is 0; otherwise makes the device directory (with `mdev_type`,
//!   `remove`, `iommu_group` → `/sys/kernel/iommu_groups/N`, and for gvt-rs types the
//!   driver's `gvt/` group: `vgpu_id`, `aperture_base`/`_size`, `high_gm_base`/`_size`,
//!   `fence_base`/`_count` placed best-fit as the driver places them, `weight` (writable,
//!   1..=100), `state`, `stats`, `ballooned`), the links in
//!   `/sys/bus/mdev/devices` and `<type>/devices`, the node `/dev/vfio/N`, and recomputes
//!   every type's `available_instances` from the parent's resource pool.
//! - `<device>/remove` ← `1`: EBUSY if the device holds a `.sim-busy` file (the driver
//!   refusing while a VMM holds it), otherwise undoes all of the above.
//! - any write to a file with no write permission bits fails with EACCES, as sysfs does
//!   even for root.
//!
//! The pool of a parent lives in `<parent>/.sim-pool.json`:
//! `{"resources": {"aperture": N, ...}, "costs": {"<type>": {"aperture": N, ...}}}`.
//! [`is_sim_root`] (a `.gvtctl-sim` marker, never honoured on `/`) is how
//! [`crate::Gvtctl::new`] picks it.

use crate::sysfs::{RealSysfs, Sysfs};
use crate::types::Partition;
use crate::uuid::Uuid;
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Marker file at the root of a simulated tree.
pub const MARKER: &str = ".gvtctl-sim";
const POOL: &str = ".sim-pool.json";

/// Whether `root` is a simulated tree (never true for `/`).
pub fn is_sim_root(root: &Path) -> bool {
    root != Path::new("/") && root.join(MARKER).is_file()
}

fn errno(n: i32) -> io::Error {
    io::Error::from_raw_os_error(n)
}

use libc::{EACCES, EBUSY, EEXIST, EINVAL, ENOSPC};

/// The simulated mdev core.
pub struct FakeMdevSysfs {
    root: PathBuf,
}

impl FakeMdevSysfs {
    pub fn new(root: &Path) -> FakeMdevSysfs {
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        FakeMdevSysfs { root }
    }

    fn canon(&self, p: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(p)
    }

    fn check_writable(p: &Path) -> io::Result<()> {
        let m = std::fs::metadata(p)?;
        if m.permissions().mode() & 0o222 == 0 {
            return Err(errno(EACCES));
        }
        Ok(())
    }

    fn create(&self, type_dir: &Path, data: &[u8]) -> io::Result<()> {
        let text = std::str::from_utf8(data).map_err(|_| errno(EINVAL))?;
        let uuid = Uuid::parse(text).map_err(|_| errno(EINVAL))?;
        let parent_dir = type_dir
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| errno(EINVAL))?
            .to_path_buf();
        let type_id = file_name(type_dir);
        let bus = self.root.join("sys/bus/mdev/devices");
        if bus.join(uuid.as_string()).symlink_metadata().is_ok() {
            return Err(errno(EEXIST));
        }
        if type_dir.join(".sim-no-device").exists() {
            return Ok(()); // accepted, but the device never shows up (a broken driver)
        }
        let avail: u32 = std::fs::read_to_string(type_dir.join("available_instances"))?
            .trim()
            .parse()
            .map_err(|_| errno(EINVAL))?;
        if avail == 0 {
            return Err(errno(ENOSPC));
        }
        let dev = parent_dir.join(uuid.as_string());
        // gvt-rs places the partition before anything becomes visible (ENOSPC when the
        // free space is fragmented or gone, whatever available_instances said).
        let gvt_attrs = if type_id.starts_with("gvt_rs-") {
            Some(self.place_gvt(&parent_dir, type_dir)?)
        } else {
            None
        };
        std::fs::create_dir(&dev)?;
        symlink(rel(&dev, type_dir), dev.join("mdev_type"))?;
        std::fs::write(dev.join("remove"), "")?;
        std::fs::set_permissions(dev.join("remove"), std::fs::Permissions::from_mode(0o200))?;
        // IOMMU group: smallest free number.
        let groups = self.root.join("sys/kernel/iommu_groups");
        std::fs::create_dir_all(&groups)?;
        let used: Vec<u32> = names(&groups)
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        let g = (0u32..).find(|n| !used.contains(n)).unwrap_or(0);
        let gdir = groups.join(g.to_string());
        std::fs::create_dir_all(gdir.join("devices"))?;
        symlink(
            rel(&gdir.join("devices"), &dev),
            gdir.join("devices").join(uuid.as_string()),
        )?;
        symlink(rel(&dev, &gdir), dev.join("iommu_group"))?;
        std::fs::create_dir_all(self.root.join("dev/vfio"))?;
        std::fs::write(self.root.join("dev/vfio").join(g.to_string()), "")?;
        std::fs::create_dir_all(type_dir.join("devices"))?;
        symlink(
            rel(&type_dir.join("devices"), &dev),
            type_dir.join("devices").join(uuid.as_string()),
        )?;
        std::fs::create_dir_all(&bus)?;
        symlink(rel(&bus, &dev), bus.join(uuid.as_string()))?;
        if let Some(attrs) = gvt_attrs {
            let g = dev.join("gvt");
            std::fs::create_dir(&g)?;
            for (k, v) in attrs {
                std::fs::write(g.join(k), format!("{v}\n"))?;
                if k != "weight" && k != "dmabuf" {
                    std::fs::set_permissions(g.join(k), std::fs::Permissions::from_mode(0o444))?;
                }
            }
        }
        recompute(&parent_dir)
    }

    /// The gvt-rs driver's `gvt/` attribute group, with the driver's best-fit placement.
    fn place_gvt(
        &self,
        parent_dir: &Path,
        type_dir: &Path,
    ) -> io::Result<[(&'static str, String); 14]> {
        let desc = std::fs::read_to_string(type_dir.join("description")).unwrap_or_default();
        let p = Partition::from_description(&desc).ok_or_else(|| errno(EINVAL))?;
        let pool = read_pool(parent_dir);
        let cap = |k: &str| pool.resources.get(k).copied().unwrap_or(u64::MAX);
        let mut ids = Vec::new();
        let mut ap = Vec::new();
        let mut hi = Vec::new();
        let mut fe = Vec::new();
        for d in devices_of(parent_dir) {
            let g = d.join("gvt");
            let r = |a: &str| {
                std::fs::read_to_string(g.join(a))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            ids.push(r("vgpu_id"));
            ap.push((r("aperture_base"), r("aperture_size")));
            hi.push((r("high_gm_base"), r("high_gm_size")));
            fe.push((r("fence_base"), r("fence_count")));
        }
        let ap_cap = cap("aperture");
        let ab = best_fit(&ap, p.aperture, 0, ap_cap).ok_or_else(|| errno(ENOSPC))?;
        let hb = best_fit(
            &hi,
            p.high_gm,
            ap_cap,
            ap_cap.saturating_add(cap("high_gm")),
        )
        .ok_or_else(|| errno(ENOSPC))?;
        let fb =
            best_fit(&fe, u64::from(p.fences), 0, cap("fences")).ok_or_else(|| errno(ENOSPC))?;
        let id = (1u64..).find(|n| !ids.contains(n)).unwrap_or(1);
        Ok([
            ("vgpu_id", id.to_string()),
            ("aperture_base", ab.to_string()),
            ("aperture_size", p.aperture.to_string()),
            ("high_gm_base", hb.to_string()),
            ("high_gm_size", p.high_gm.to_string()),
            ("fence_base", fb.to_string()),
            ("fence_count", p.fences.to_string()),
            ("weight", p.weight.unwrap_or(1).to_string()),
            ("state", "running".to_string()),
            ("stats", SIM_STATS.to_string()),
            ("ballooned", "0".to_string()),
            ("dmabuf", "0".to_string()),
            ("display", sim_display(&desc)),
            ("migration", SIM_MIGRATION.to_string()),
        ])
    }

    fn remove(&self, dev: &Path, data: &[u8]) -> io::Result<()> {
        let v = std::str::from_utf8(data).map_err(|_| errno(EINVAL))?.trim();
        let v: u64 = v.parse().map_err(|_| errno(EINVAL))?;
        if v == 0 {
            return Ok(());
        }
        if dev.join(".sim-busy").exists() {
            return Err(errno(EBUSY));
        }
        let uuid = file_name(dev);
        let parent_dir = dev.parent().ok_or_else(|| errno(EINVAL))?.to_path_buf();
        if let Ok(t) = self.canon(&dev.join("mdev_type")) {
            let _ = std::fs::remove_file(t.join("devices").join(&uuid));
        }
        if let Ok(g) = self.canon(&dev.join("iommu_group")) {
            let _ = std::fs::remove_file(self.root.join("dev/vfio").join(file_name(&g)));
            let _ = std::fs::remove_dir_all(&g);
        }
        let _ = std::fs::remove_file(self.root.join("sys/bus/mdev/devices").join(&uuid));
        std::fs::remove_dir_all(dev)?;
        recompute(&parent_dir)
    }
}

/// The simulated clock: `<root>/.sim-clock`, nanoseconds.
const CLOCK: &str = ".sim-clock";
/// A device's programmed load: `<device>/.sim-load`, `name per-second-increase` lines.
const LOAD: &str = ".sim-load";

impl FakeMdevSysfs {
    /// One simulated second passes: the clock advances by 10^9 ns and every device's
    /// `gvt/stats` counters grow by its programmed load ([`set_load`]).
    fn tick(&self) -> io::Result<u64> {
        let clock = self.root.join(CLOCK);
        let now = std::fs::read_to_string(&clock)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .saturating_add(1_000_000_000);
        crate::sysfs::write_atomically(&clock, now.to_string().as_bytes())?;
        let bus = self.root.join("sys/bus/mdev/devices");
        for name in names(&bus) {
            let Ok(dev) = self.canon(&bus.join(&name)) else {
                continue;
            };
            let (Ok(load), Ok(stats)) = (
                std::fs::read_to_string(dev.join(LOAD)),
                std::fs::read_to_string(dev.join("gvt/stats")),
            ) else {
                continue;
            };
            let load: BTreeMap<&str, &str> = load
                .lines()
                .filter_map(|l| l.trim().split_once(' '))
                .collect();
            let moved: Vec<String> = stats
                .lines()
                .map(|l| match l.split_once(' ') {
                    Some((k, v)) => match (v.parse::<u64>(), load.get(k)) {
                        (Ok(n), Some(add)) => match add.trim().parse::<u64>() {
                            Ok(add) => format!("{k} {}", n.saturating_add(add)),
                            Err(_) => l.to_string(),
                        },
                        // A text value (`state running`) is set as it is.
                        (Err(_), Some(to)) => format!("{k} {}", to.trim()),
                        _ => l.to_string(),
                    },
                    None => l.to_string(),
                })
                .collect();
            replace_file(&dev.join("gvt/stats"), &moved.join("\n"))?;
        }
        Ok(now)
    }
}

/// Replace a (possibly read-only) file's content, keeping its mode.
fn replace_file(path: &Path, text: &str) -> io::Result<()> {
    let mode = std::fs::metadata(path)?.permissions();
    crate::sysfs::write_atomically(path, text.as_bytes())?;
    std::fs::set_permissions(path, mode)
}

/// Program device `uuid`'s load: each simulated second ([`FakeMdevSysfs`]'s `now_ns`)
/// adds `per_s` to the named `gvt/stats` counters (`rcs_time_ns 400000000` is 40% of
/// the render engine), and sets text values (`state running`).
pub fn set_load(root: &Path, uuid: &Uuid, per_s: &[(String, String)]) -> io::Result<()> {
    let dev = root.join("sys/bus/mdev/devices").join(uuid.as_string());
    if !dev.join("gvt/stats").is_file() {
        return Err(errno(libc::ENOENT));
    }
    let text: String = per_s.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    std::fs::write(dev.join(LOAD), text)
}

impl Sysfs for FakeMdevSysfs {
    /// The simulated clock: each reading is one simulated second after the previous one
    /// (and moves the counters, see [`set_load`]), so statistics are exact and need no
    /// waiting.
    fn now_ns(&self) -> u64 {
        self.tick().unwrap_or(0)
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        let m = std::fs::metadata(path)?;
        if m.is_file() && m.permissions().mode() & 0o444 == 0 {
            // Write-only attributes (create, remove) cannot be read.
            return Err(errno(EACCES));
        }
        RealSysfs.read_to_string(path)
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        Self::check_writable(path)?;
        let path = self.canon(path)?;
        let name = file_name(&path);
        let dir = path.parent().ok_or_else(|| errno(EINVAL))?;
        if name == "create"
            && dir.parent().map(file_name).as_deref() == Some("mdev_supported_types")
        {
            return self.create(dir, data);
        }
        if name == "remove" && dir.join("mdev_type").symlink_metadata().is_ok() {
            return self.remove(dir, data);
        }
        if name == "weight" && file_name(dir) == "gvt" {
            let w: u32 = std::str::from_utf8(data)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| errno(EINVAL))?;
            if !(1..=100).contains(&w) {
                return Err(errno(EINVAL));
            }
        }
        if name == "dmabuf" && file_name(dir) == "gvt" {
            let v = std::str::from_utf8(data).map(str::trim);
            if !matches!(v, Ok("0") | Ok("1")) {
                return Err(errno(EINVAL));
            }
        }
        RealSysfs.write(&path, data)
    }

    /// Confined as on a host ([`crate::sysfs::open_beneath`]), then written with the
    /// simulated core's semantics (a `remove` removes, `gvt/weight` checks its range).
    fn write_attr(&self, dev: &Path, attr: &str, data: &[u8]) -> io::Result<()> {
        drop(crate::sysfs::open_beneath(dev, attr)?);
        self.write(&dev.join(attr), data)
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        match path.parent() {
            Some(d) if !path.exists() => Self::check_writable(d)?,
            _ => Self::check_writable(path)?,
        }
        RealSysfs.write_file(path, data)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        RealSysfs.read_dir(path)
    }

    fn read_link(&self, path: &Path) -> io::Result<PathBuf> {
        RealSysfs.read_link(path)
    }

    fn exists(&self, path: &Path) -> bool {
        RealSysfs.exists(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        RealSysfs.is_dir(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        if !path.exists() {
            // The nearest existing ancestor must be writable.
            let mut a = path;
            while let Some(p) = a.parent() {
                if p.exists() {
                    Self::check_writable(p)?;
                    break;
                }
                a = p;
            }
        }
        RealSysfs.create_dir_all(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        if let Some(d) = path.parent() {
            Self::check_writable(d)?;
        }
        RealSysfs.remove_file(path)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn names(dir: &Path) -> Vec<String> {
    RealSysfs.read_dir(dir).unwrap_or_default()
}

/// Relative symlink target from directory `from` to `to` (both canonical).
fn rel(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(t.iter()).take_while(|(a, b)| a == b).count();
    let mut r = PathBuf::new();
    for _ in common..f.len() {
        r.push("..");
    }
    for c in &t[common..] {
        r.push(c.as_os_str());
    }
    r
}

/// What a fresh vGPU's `gvt/stats` says (the driver resets the vGPU once at creation).
/// `gvt/display` of a vGPU whose guest has not set a mode yet, with the monitor of the
/// type's `resolution:` line (the driver's default EDID: that resolution's VESA CVT
/// reduced-blanking timing at 60 Hz, whose pixel clock in the EDID's 10 kHz units gives
/// the refresh the driver reports).  `tests/vm/tests/gvtctl.rs`
/// (`gvtctl_sim_tree_matches_the_driver_by_value`) compares this, by value, with the
/// driver's.
fn sim_display(type_description: &str) -> String {
    let res = type_description
        .lines()
        .find_map(|l| l.strip_prefix("resolution:"))
        .map(str::trim)
        .unwrap_or("1024x768");
    let hz = match res {
        "1024x768" => "59.869",
        "1920x1200" => "59.950",
        _ => "60.000",
    };
    format!(
        "plane: none: guest has not initialized the display: PVINFO display_ready (BAR0 0x78804) is 0 \
         (guest graphics driver not loaded, or not vGPU-aware)\nshown_plane_id: 0\nplane_changes: 0\n\
         dmabufs_exported: 0\ndmabuf_page_faults: 0\ndmabufs_live: 0\ndmabuf_pages: 0\ndmabufs_refused: 0\nmonitor: {res} {hz} Hz, hotplugs 0"
    )
}

/// `gvt/stats` of a new vGPU, as the driver writes it (gvt-core `Vgpu::write_stats`, the
/// scheduler's per-slot stats, then the module's own two counters); compared with the
/// driver's counter names in the VM (see [`sim_display`]).
const SIM_STATS: &str = "traps_pm 0\ntraps_tail 0\ntraps_pte 0\ntraps_other 0\nmmio_rejected 0\n\
cfg_reads 0\ncfg_writes 0\ncfg_rejected 0\nresets 0\nggtt_mapped 0\nggtt_rejected 0\nggtt_dropped 0\n\
ppgtt_pinned 0\nvblank_frames 0\nvblank_ticks 0\nflips 0\nsubmissions_accepted 0\nsubmissions_held 0\n\
submissions_rejected 0\nengine_faults 0\nstate idle\nrcs_time_ns 0\nbcs_time_ns 0\nmediation_ns 0\nsubmissions 0\n\
cmds_audited 0\nreject_unknown_cmd 0\nreject_privileged 0\nreject_bad_address 0\nreject_malformed 0\n\
reject_backpressure 0\nreject_failed 0\nreject_bad_geometry 0\n\
ctx_switches 0\npicks 0\nrefills_without_work 0\nhangs 0\nhangs_total 0\nself_map_faults 0\npins_refused_unmapping 0\nunmap_retries 0\n\
host_memory_bytes 0\nhost_memory_vregs 0\nhost_memory_ggtt 0\nhost_memory_ppgtt 0\nhost_memory_shadow 0\n\
host_memory_state 0";

/// `gvt/migration` of a new vGPU (the module's `migration.rs`): what it offers, its
/// VFIO migration state, the largest stream (0 here: the driver's depends on the type)
/// and the last save/restore.  Compared by its keys with the driver's in the VM.
const SIM_MIGRATION: &str =
    "capabilities stop_copy p2p pre_copy\nstate running\nmax_stream_bytes 0\n\
saved_bytes 0\nprecopy_bytes 0\nstop_copy_bytes 0\nsave_us 0\nrestored_bytes 0\nrestore_us 0\nrefused 0";

/// The driver's placement (gvt-core `partition.rs`): among the free gaps of
/// `[start, end)` between the `used` extents, the smallest that holds `size`, the
/// lowest address on ties.
fn best_fit(used: &[(u64, u64)], size: u64, start: u64, end: u64) -> Option<u64> {
    let mut v: Vec<(u64, u64)> = used.iter().copied().filter(|&(_, s)| s > 0).collect();
    v.sort();
    let mut best: Option<(u64, u64)> = None; // (gap size, base)
    let mut consider = |from: u64, to: u64| {
        let gap = to.saturating_sub(from);
        if to >= from && gap >= size && best.is_none_or(|(g, _)| gap < g) {
            best = Some((gap, from));
        }
    };
    let mut cur = start;
    for (b, s) in v {
        if b > cur {
            consider(cur, b.min(end));
        }
        cur = cur.max(b.saturating_add(s));
    }
    consider(cur, end);
    best.map(|(_, base)| base)
}

#[derive(Default, serde::Deserialize, serde::Serialize)]
struct Pool {
    resources: BTreeMap<String, u64>,
    costs: BTreeMap<String, BTreeMap<String, u64>>,
}

fn read_pool(parent_dir: &Path) -> Pool {
    std::fs::read_to_string(parent_dir.join(POOL))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

fn devices_of(parent_dir: &Path) -> Vec<PathBuf> {
    names(parent_dir)
        .into_iter()
        .map(|n| parent_dir.join(n))
        .filter(|d| d.join("mdev_type").symlink_metadata().is_ok())
        .collect()
}

/// Recompute every type's `available_instances` from the pool and the live devices.
fn recompute(parent_dir: &Path) -> io::Result<()> {
    let pool = read_pool(parent_dir);
    let mut used: BTreeMap<String, u64> = BTreeMap::new();
    for d in devices_of(parent_dir) {
        let t = std::fs::read_link(d.join("mdev_type"))
            .map(|l| file_name(&l))
            .unwrap_or_default();
        for (res, c) in pool.costs.get(&t).into_iter().flatten() {
            *used.entry(res.clone()).or_default() += c;
        }
    }
    let types = parent_dir.join("mdev_supported_types");
    for t in names(&types) {
        let Some(cost) = pool.costs.get(&t) else {
            continue;
        };
        let mut n = u64::from(u32::MAX);
        for (res, c) in cost {
            if *c == 0 {
                continue;
            }
            let cap = pool.resources.get(res).copied().unwrap_or(0);
            let free = cap.saturating_sub(used.get(res).copied().unwrap_or(0));
            n = n.min(free / c);
        }
        std::fs::write(types.join(&t).join("available_instances"), format!("{n}\n"))?;
    }
    Ok(())
}

// ---- fixtures ------------------------------------------------------------------------

/// Which simulated parents [`init`] creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixture {
    /// `gvt-sim0` as the gvt_rs driver registers it with `aperture_mb=256 gm_mb=1024`:
    /// types `gvt_rs-GVTsim_{32,64,128,256}M`; pool: 256M aperture, 752M high GM,
    /// 16 fences, 8 vGPUs.
    GvtRs,
    /// `0000:00:04.0`: a PCI function bound to gvt_rs by `driver_override` (the VM rig's
    /// spare `pci-testdev`, 1b36:0005), a parent of its own with the same types and pool
    /// as [`Fixture::GvtRs`].
    GvtRsPci,
    /// `0000:00:02.0`, types `i915-GVTg_V5_{1,2,4,8}`; pool: 1G aperture, 4G high GM, 28 fences.
    I915,
    /// `mtty`, types `mtty-1` and `mtty-2`; 4 ports.
    Mtty,
}

impl Fixture {
    pub fn parse(s: &str) -> Option<Fixture> {
        match s {
            "gvt-rs" => Some(Fixture::GvtRs),
            "gvt-rs-pci" => Some(Fixture::GvtRsPci),
            "i915" => Some(Fixture::I915),
            "mtty" => Some(Fixture::Mtty),
            _ => None,
        }
    }
}

struct SimType {
    id: &'static str,
    name: &'static str,
    description: String,
    cost: Vec<(&'static str, u64)>,
}

fn gvt_type(
    id: &'static str,
    name: &'static str,
    low: u64,
    high: u64,
    fence: u64,
    res: &str,
    weight: u32,
) -> SimType {
    SimType {
        id,
        name,
        description: format!(
            "low_gm_size: {low}MB\nhigh_gm_size: {high}MB\nfence: {fence}\nresolution: {res}\nweight: {weight}\n"
        ),
        cost: vec![("aperture", low << 20), ("high_gm", high << 20), ("fences", fence)],
    }
}

/// What a gvt_rs parent registers with `aperture_mb=256 gm_mb=1024` (the VM rig's
/// parameters): 16 fences, at most 8 vGPUs, high GM 1024 - 256 - 16 (host reserve) =
/// 752M shared 8/4/2/1 ways.
const GVT_RS_POOL: [(&str, u64); 4] = [
    ("aperture", 256 << 20),
    ("high_gm", 752 << 20),
    ("fences", 16),
    ("vgpus", 8),
];

fn gvt_rs_types() -> Vec<SimType> {
    vec![
        gvt_rs_type("gvt_rs-GVTsim_32M", "GVTsim_32M", 32, 94, 2, "1024x768", 2),
        gvt_rs_type(
            "gvt_rs-GVTsim_64M",
            "GVTsim_64M",
            64,
            188,
            4,
            "1920x1200",
            4,
        ),
        gvt_rs_type(
            "gvt_rs-GVTsim_128M",
            "GVTsim_128M",
            128,
            376,
            8,
            "1920x1200",
            8,
        ),
        gvt_rs_type(
            "gvt_rs-GVTsim_256M",
            "GVTsim_256M",
            256,
            752,
            16,
            "1920x1200",
            16,
        ),
    ]
}

/// A gvt-rs type: a GVT type that also takes one of the parent's vGPU slots.
fn gvt_rs_type(
    id: &'static str,
    name: &'static str,
    low: u64,
    high: u64,
    fence: u64,
    res: &str,
    weight: u32,
) -> SimType {
    let mut t = gvt_type(id, name, low, high, fence, res, weight);
    t.cost.push(("vgpus", 1));
    t
}

fn add_parent(
    root: &Path,
    devpath: &str,
    name: &str,
    resources: &[(&str, u64)],
    types: Vec<SimType>,
) -> io::Result<()> {
    let pdir = root.join("sys/devices").join(devpath);
    let tdir = pdir.join("mdev_supported_types");
    std::fs::create_dir_all(&tdir)?;
    let mut pool = Pool::default();
    for (k, v) in resources {
        pool.resources.insert(k.to_string(), *v);
    }
    for t in types {
        let d = tdir.join(t.id);
        std::fs::create_dir_all(d.join("devices"))?;
        std::fs::write(d.join("name"), format!("{}\n", t.name))?;
        std::fs::write(d.join("description"), &t.description)?;
        std::fs::write(d.join("device_api"), "vfio-pci\n")?;
        std::fs::write(d.join("available_instances"), "0\n")?;
        std::fs::write(d.join("create"), "")?;
        std::fs::set_permissions(d.join("create"), std::fs::Permissions::from_mode(0o200))?;
        pool.costs.insert(
            t.id.to_string(),
            t.cost.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        );
    }
    std::fs::write(
        pdir.join(POOL),
        serde_json::to_string_pretty(&pool).unwrap_or_default(),
    )?;
    let class = root.join("sys/class/mdev_bus");
    std::fs::create_dir_all(&class)?;
    let canon_class = std::fs::canonicalize(&class)?;
    let canon_p = std::fs::canonicalize(&pdir)?;
    let link = class.join(name);
    if link.symlink_metadata().is_err() {
        symlink(rel(&canon_class, &canon_p), link)?;
    }
    recompute(&canon_p)
}

/// Build a simulated tree under `root` with the given parents (idempotent per parent).
pub fn init(root: &Path, fixtures: &[Fixture]) -> io::Result<()> {
    if root == Path::new("/") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to simulate on /",
        ));
    }
    for d in [
        "sys/bus/mdev/devices",
        "sys/class/mdev_bus",
        "sys/kernel/iommu_groups",
        "dev/vfio",
        "proc",
        "etc/mdevctl.d",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::write(
        root.join(MARKER),
        "simulated mdev core tree (gvtctl sim init)\n",
    )?;
    for f in fixtures {
        match f {
            // What `insmod gvt_rs.ko aperture_mb=256 gm_mb=1024` registers (the VM rig's
            // parameters; tests/vm/tests/gvtctl.rs checks gvtctl against it): a class
            // device /sys/devices/virtual/gvt_rs/gvt-sim0, 16 fences, at most 8 vGPUs,
            // high GM 1024 - 256 - 16 (host reserve) = 752M shared 8/4/2/1 ways.
            Fixture::GvtRs => add_parent(
                root,
                "virtual/gvt_rs/gvt-sim0",
                "gvt-sim0",
                &GVT_RS_POOL,
                gvt_rs_types(),
            )?,
            // What binding a PCI function to gvt_rs registers (`echo gvt_rs >
            // .../driver_override; echo 0000:00:04.0 > /sys/bus/pci/drivers_probe`): the
            // function's own directory is the parent, with its PCI attributes and its
            // `driver` link next to the types.
            Fixture::GvtRsPci => {
                let bdf = "0000:00:04.0";
                add_parent(
                    root,
                    &format!("pci0000:00/{bdf}"),
                    bdf,
                    &GVT_RS_POOL,
                    gvt_rs_types(),
                )?;
                let dir = root.join("sys/devices/pci0000:00").join(bdf);
                for (f, v) in [
                    ("vendor", "0x1b36"),
                    ("device", "0x0005"),
                    ("class", "0x00ff00"),
                    ("driver_override", "gvt_rs"),
                    ("enable", "0"),
                ] {
                    std::fs::write(dir.join(f), format!("{v}\n"))?;
                }
                let drv = root.join("sys/bus/pci/drivers/gvt_rs");
                std::fs::create_dir_all(&drv)?;
                let bus_dev = root.join("sys/bus/pci/devices");
                std::fs::create_dir_all(&bus_dev)?;
                let (cdrv, cdir, cbus) = (
                    std::fs::canonicalize(&drv)?,
                    std::fs::canonicalize(&dir)?,
                    std::fs::canonicalize(&bus_dev)?,
                );
                if dir.join("driver").symlink_metadata().is_err() {
                    symlink(rel(&cdir, &cdrv), dir.join("driver"))?;
                }
                if drv.join(bdf).symlink_metadata().is_err() {
                    symlink(rel(&cdrv, &cdir), drv.join(bdf))?;
                }
                if bus_dev.join(bdf).symlink_metadata().is_err() {
                    symlink(rel(&cbus, &cdir), bus_dev.join(bdf))?;
                }
            }
            Fixture::I915 => add_parent(
                root,
                "pci0000:00/0000:00:02.0",
                "0000:00:02.0",
                &[("aperture", 1 << 30), ("high_gm", 4 << 30), ("fences", 28)],
                vec![
                    gvt_type("i915-GVTg_V5_1", "GVTg_V5_1", 512, 2048, 4, "1920x1200", 16),
                    gvt_type("i915-GVTg_V5_2", "GVTg_V5_2", 256, 1024, 4, "1920x1200", 8),
                    gvt_type("i915-GVTg_V5_4", "GVTg_V5_4", 128, 512, 4, "1920x1200", 4),
                    gvt_type("i915-GVTg_V5_8", "GVTg_V5_8", 64, 384, 4, "1024x768", 2),
                ],
            )?,
            Fixture::Mtty => add_parent(
                root,
                "virtual/mtty/mtty",
                "mtty",
                &[("ports", 4)],
                vec![
                    SimType {
                        id: "mtty-1",
                        name: "Single port serial",
                        description: "1 serial port\n".into(),
                        cost: vec![("ports", 1)],
                    },
                    SimType {
                        id: "mtty-2",
                        name: "Dual port serial",
                        description: "2 serial ports\n".into(),
                        cost: vec![("ports", 2)],
                    },
                ],
            )?,
        }
    }
    Ok(())
}

/// Make process `pid` (named `command`) hold `node` open, as `/proc/<pid>/fd/<n>` and
/// `/proc/<pid>/fdinfo/<n>` show it: the fd link leads to the tree's own node (so
/// `stat` through it reaches that file, as through the kernel's magic link), opened
/// read-write.
pub fn hold(root: &Path, pid: u32, command: &str, node: &str) -> io::Result<()> {
    hold_as_vm(root, pid, command, None, node)
}

/// [`hold`], by a QEMU whose command line names its VM `vm_name` (as libvirt starts
/// it: `-name guest=NAME,debug-threads=on`).
pub fn hold_as_vm(
    root: &Path,
    pid: u32,
    command: &str,
    vm_name: Option<&str>,
    node: &str,
) -> io::Result<()> {
    let p = root.join("proc").join(pid.to_string());
    std::fs::create_dir_all(p.join("fd"))?;
    std::fs::create_dir_all(p.join("fdinfo"))?;
    std::fs::write(p.join("comm"), format!("{command}\n"))?;
    let mut cmdline = format!("/usr/bin/{command}\0");
    if let Some(n) = vm_name {
        cmdline.push_str(&format!("-name\0guest={n},debug-threads=on\0"));
    }
    std::fs::write(p.join("cmdline"), cmdline)?;
    let n = (names(&p.join("fd")).len() + 3).to_string();
    let target = std::fs::canonicalize(root)?.join(node.trim_start_matches('/'));
    symlink(target, p.join("fd").join(&n))?;
    std::fs::write(
        p.join("fdinfo").join(&n),
        format!(
            "pos:\t0\nflags:\t0{:o}\nmnt_id:\t1\n",
            libc::O_RDWR | libc::O_CLOEXEC
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths() {
        assert_eq!(
            rel(
                Path::new("/r/sys/bus/mdev/devices"),
                Path::new("/r/sys/devices/virtual/gvt/g/u")
            ),
            PathBuf::from("../../../devices/virtual/gvt/g/u")
        );
        assert_eq!(
            rel(Path::new("/a/b"), Path::new("/a/b/c")),
            PathBuf::from("c")
        );
    }

    #[test]
    fn best_fit_takes_the_smallest_hole() {
        assert_eq!(best_fit(&[], 64, 0, 512), Some(0));
        assert_eq!(best_fit(&[(0, 64), (128, 64)], 64, 0, 512), Some(64));
        assert_eq!(best_fit(&[(0, 64), (128, 64)], 128, 0, 512), Some(192));
        assert_eq!(best_fit(&[(0, 512)], 1, 0, 512), None);
        assert_eq!(best_fit(&[(u64::MAX - 1, 2)], 1, 0, u64::MAX), Some(0));
        // Holes of 128 at 0 and of 64 at 192: a 64 goes to the smaller one.
        assert_eq!(best_fit(&[(128, 64), (256, 256)], 64, 0, 512), Some(192));
        // Two equal holes: the lower address.
        assert_eq!(best_fit(&[(64, 64), (192, 320)], 64, 0, 512), Some(0));
        // A range that does not start at 0 (high GM after the aperture).
        assert_eq!(best_fit(&[(256, 94)], 94, 256, 1008), Some(350));
        assert_eq!(best_fit(&[(256, 752)], 1, 256, 1008), None);
    }
}
