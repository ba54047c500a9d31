//! The operations: discover, create, destroy, list, define/undefine/start/stop.
//!
//! Layout read and written (all under the root, `/` on a host):
//! - parents: `sys/class/mdev_bus/<parent>/mdev_supported_types/<type>/{name,description,
//!   available_instances,device_api,create,devices/}`
//! - instances: `sys/bus/mdev/devices/<uuid>/{mdev_type -> type dir, remove, iommu_group ->
//!   /sys/kernel/iommu_groups/N, gvt/*}`; the VFIO group node is `dev/vfio/N`
//! - holders: `proc/<pid>/fd/*` links; definitions: `etc/mdevctl.d/<parent>/<uuid>`.

use crate::defs::{self, Definition, StartMode};
use crate::error::{Error, ExistingInstance};
use crate::escape::escape;
use crate::holders::{self, Holder, PossibleHolder};
use crate::sysfs::{RealSysfs, Sysfs};
use crate::types::{MdevType, Partition, PartitionRequest, TypeKind, TypeSummary};
use crate::uuid::Uuid;
use crate::vmm::VmmArgs;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Default bound on waiting for a created device to appear / a removed one to go.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A vGPU (or any mdev) as `list`/`info` show it: active in sysfs, defined, or both.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Instance {
    pub uuid: Uuid,
    pub parent: String,
    #[serde(rename = "type")]
    pub type_id: String,
    /// The type's `name`, when the type is present.
    pub type_name: Option<String>,
    /// Present in `/sys/bus/mdev/devices`.
    pub active: bool,
    /// The type's GM partition (GVT types).
    pub partition: Option<Partition>,
    /// The driver's `gvt/` attribute group (gvt-rs): decimal values as numbers.
    pub gvt: Option<BTreeMap<String, serde_json::Value>>,
    /// VFIO migration (gvt-rs, `gvt/migration`): what the device offers and its state.
    pub migration: Option<Migration>,
    pub iommu_group: Option<u32>,
    /// The VFIO group node a VMM opens (`/dev/vfio/N`).
    pub vfio_group_node: Option<String>,
    /// `true` held by a process, `false` idle or stopped, `null` unknown (no permission).
    pub in_use: Option<bool>,
    pub holders: Vec<Holder>,
    /// Processes that may hold it but could not be verified (then `in_use` is `null`).
    pub possible_holders: Vec<PossibleHolder>,
    /// The persistent definition, if any.
    pub definition: Option<Definition>,
    pub vmm_args: VmmArgs,
}

/// A vGPU's VFIO migration (issue 14), from its `gvt/migration` attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Migration {
    /// The VFIO migration v2 features it offers (`stop_copy`, `p2p`, `pre_copy`).
    pub capabilities: Vec<String>,
    /// Its device state (`running`, `pre_copy`, `stop_copy`, `resuming`, `stop`, `error`, ...).
    pub state: String,
    /// The driver's figures (`max_stream_bytes`, `saved_bytes`, `save_us`, `refused`, ...).
    pub figures: BTreeMap<String, u64>,
    /// A migration target must be a vGPU of this type (`gvtctl create --like UUID`).
    pub target_type: String,
}

impl Migration {
    /// Parse `gvt/migration` (`capabilities A B ...`, `state S`, then `key N` lines);
    /// `None` without a capabilities and a state line.
    pub fn parse(text: &str, type_id: &str) -> Option<Migration> {
        let mut caps = None;
        let mut state = None;
        let mut figures = BTreeMap::new();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            match (w.next(), w.next()) {
                (Some("capabilities"), _) => {
                    caps = Some(
                        line.split_whitespace()
                            .skip(1)
                            .map(str::to_string)
                            .collect(),
                    )
                }
                (Some("state"), Some(s)) => state = Some(s.to_string()),
                (Some(k), Some(v)) => {
                    if let Ok(n) = v.parse::<u64>() {
                        figures.insert(k.to_string(), n);
                    }
                }
                _ => {}
            }
        }
        Some(Migration {
            capabilities: caps?,
            state: state?,
            figures,
            target_type: type_id.to_string(),
        })
    }
}

/// What `create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub parent: Option<String>,
    pub type_id: Option<String>,
    pub partition: PartitionRequest,
    pub uuid: Option<Uuid>,
    pub weight: Option<u32>,
    /// How the VMM shows the vGPU's screen (gvt-rs types; `None`: the driver's default).
    pub display: Option<DisplayPath>,
    /// Also write a persistent definition with this start mode.
    pub define: Option<StartMode>,
}

/// How a VMM with `display=on` gets the vGPU's screen (sysfs `gvt/dmabuf`).
///
/// QEMU takes the dma-buf path whenever the device offers it, and that path needs a GL
/// display (`-display egl-headless`, `gtk,gl=on`, `spice-app,gl=on`); without one QEMU
/// refuses to start ("opengl not available"). The region path works with any display,
/// VNC included, at the cost of a copy per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayPath {
    /// dma-buf planes offered: zero-copy, the VMM needs GL.
    Dmabuf,
    /// dma-buf planes not offered: the VMM reads the display region (the driver's
    /// default, unless `gvt_rs` was loaded with `dmabuf=1`).
    Region,
}

impl DisplayPath {
    /// The `gvt/dmabuf` value.
    pub fn dmabuf_attr(self) -> &'static str {
        match self {
            DisplayPath::Dmabuf => "1",
            DisplayPath::Region => "0",
        }
    }
}

/// What `define` asks for.
#[derive(Debug, Clone)]
pub struct DefineRequest {
    pub uuid: Option<Uuid>,
    pub parent: Option<String>,
    pub type_id: Option<String>,
    pub partition: PartitionRequest,
    pub weight: Option<u32>,
    pub display: Option<DisplayPath>,
    pub start: StartMode,
}

/// Outcome of starting one definition in [`Gvtctl::start_auto`].
#[derive(Debug)]
pub struct StartOutcome {
    pub definition: Definition,
    pub result: Result<StartStatus, Error>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StartStatus {
    Started,
    AlreadyActive,
}

/// Facts read from an active device's sysfs directory.
struct Active {
    parent: String,
    type_id: String,
    gvt: Option<BTreeMap<String, serde_json::Value>>,
    iommu_group: Option<u32>,
    nodes: Vec<String>,
}

/// Entry point: everything under `root`, through a [`Sysfs`].
pub struct Gvtctl {
    root: PathBuf,
    fs: Box<dyn Sysfs>,
    timeout: Duration,
}

impl Gvtctl {
    /// Operate on `root` (`/` on a host). A tree made by [`crate::fake_sysfs::init`] (it carries
    /// the [`crate::fake_sysfs::MARKER`] file, never on `/`) gets the simulated mdev core.
    pub fn new(root: impl Into<PathBuf>) -> Gvtctl {
        let root = root.into();
        let fs: Box<dyn Sysfs> = if crate::fake_sysfs::is_sim_root(&root) {
            log::debug!("{}: simulated mdev core", root.display());
            Box::new(crate::fake_sysfs::FakeMdevSysfs::new(&root))
        } else {
            Box::new(RealSysfs)
        };
        Gvtctl::with_sysfs(root, fs)
    }

    pub fn with_sysfs(root: impl Into<PathBuf>, fs: Box<dyn Sysfs>) -> Gvtctl {
        Gvtctl {
            root: root.into(),
            fs,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Bound on waiting for devices to appear or go.
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn parent_base(&self) -> PathBuf {
        self.root.join("sys/class/mdev_bus")
    }

    fn mdev_base(&self) -> PathBuf {
        self.root.join("sys/bus/mdev/devices")
    }

    fn dev_dir(&self, uuid: &Uuid) -> PathBuf {
        self.mdev_base().join(uuid.as_string())
    }

    fn type_dir(&self, parent: &str, type_id: &str) -> PathBuf {
        self.parent_base()
            .join(parent)
            .join("mdev_supported_types")
            .join(type_id)
    }

    // ---- discovery -------------------------------------------------------------------

    /// Names of the parents registered with the mdev core (may be empty).
    pub fn parent_names(&self) -> Vec<String> {
        self.fs
            .read_dir(&self.parent_base())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| {
                self.fs
                    .is_dir(&self.parent_base().join(p).join("mdev_supported_types"))
            })
            .collect()
    }

    /// Types of all parents, or of one. Errors: no parent at all, or `parent` unknown.
    pub fn types(&self, parent: Option<&str>) -> Result<Vec<MdevType>, Error> {
        let present = self.parent_names();
        let parents = match parent {
            Some(p) => {
                if !present.iter().any(|x| x == p) {
                    return Err(Error::UnknownParent {
                        name: p.to_string(),
                        present,
                    });
                }
                vec![p.to_string()]
            }
            None => {
                if present.is_empty() {
                    return Err(Error::NoParent {
                        dir: self.parent_base(),
                    });
                }
                present
            }
        };
        let mut out = Vec::new();
        for p in parents {
            let tdir = self.parent_base().join(&p).join("mdev_supported_types");
            for t in self.fs.read_dir(&tdir).unwrap_or_default() {
                if self.fs.is_dir(&tdir.join(&t)) {
                    out.push(self.read_type(&p, &t));
                }
            }
        }
        // Per parent, smallest partition first (free-text types after, by name).
        out.sort_by(|a, b| {
            let key = |t: &MdevType| {
                t.partition
                    .as_ref()
                    .map(|p| (p.aperture, p.high_gm, p.fences))
            };
            (&a.parent, key(a).is_none(), key(a), &a.id).cmp(&(
                &b.parent,
                key(b).is_none(),
                key(b),
                &b.id,
            ))
        });
        Ok(out)
    }

    fn read_attr(&self, p: &Path) -> Option<String> {
        self.fs
            .read_to_string(p)
            .ok()
            .map(|s| s.trim_end_matches('\n').to_string())
    }

    fn read_type(&self, parent: &str, type_id: &str) -> MdevType {
        let dir = self.type_dir(parent, type_id);
        let description = self.read_attr(&dir.join("description"));
        let partition = match TypeKind::of(type_id) {
            TypeKind::Generic => None,
            _ => description.as_deref().and_then(Partition::from_description),
        };
        MdevType {
            parent: parent.to_string(),
            id: type_id.to_string(),
            kind: TypeKind::of(type_id),
            name: self
                .read_attr(&dir.join("name"))
                .map(|s| s.trim().to_string()),
            device_api: self
                .read_attr(&dir.join("device_api"))
                .map(|s| s.trim().to_string()),
            available_instances: self
                .read_attr(&dir.join("available_instances"))
                .and_then(|s| s.trim().parse().ok()),
            description,
            partition,
        }
    }

    /// UUIDs present in `/sys/bus/mdev/devices`.
    pub fn active_uuids(&self) -> Vec<Uuid> {
        self.fs
            .read_dir(&self.mdev_base())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| Uuid::parse(&n).ok().filter(|u| u.as_string() == n))
            .collect()
    }

    fn link_name(&self, p: &Path) -> Option<String> {
        let t = self.fs.read_link(p).ok()?;
        t.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    fn read_active(&self, uuid: &Uuid) -> Option<Active> {
        let dev = self.dev_dir(uuid);
        if !self.fs.exists(&dev) {
            return None;
        }
        let type_link = self.fs.read_link(&dev.join("mdev_type")).ok();
        let type_id = type_link
            .as_ref()
            .and_then(|t| t.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unknown".to_string());
        // `.../<parent>/mdev_supported_types/<type>`; else the device link `.../<parent>/<uuid>`.
        let parent = type_link
            .as_ref()
            .and_then(|t| {
                t.parent()?
                    .parent()?
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .or_else(|| {
                let l = self.fs.read_link(&dev).ok()?;
                l.parent()?
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let gdir = dev.join("gvt");
        let gvt = if self.fs.is_dir(&gdir) {
            let mut m = BTreeMap::new();
            for a in self.fs.read_dir(&gdir).unwrap_or_default() {
                if let Some(v) = self.read_attr(&gdir.join(&a)) {
                    let v = v.trim().to_string();
                    let jv = match v.parse::<u64>() {
                        Ok(n) => serde_json::Value::from(n),
                        Err(_) => serde_json::Value::from(v),
                    };
                    m.insert(a, jv);
                }
            }
            Some(m)
        } else {
            None
        };
        let iommu_group = self
            .link_name(&dev.join("iommu_group"))
            .and_then(|n| n.parse().ok());
        let mut nodes = Vec::new();
        if let Some(g) = iommu_group {
            nodes.push(format!("/dev/vfio/{g}"));
        }
        for c in self.fs.read_dir(&dev.join("vfio-dev")).unwrap_or_default() {
            // The kernel names them vfioN; anything else is not a node name we trust.
            if c.starts_with("vfio") && c.len() > 4 && c[4..].bytes().all(|b| b.is_ascii_digit()) {
                nodes.push(format!("/dev/vfio/devices/{c}"));
            }
        }
        Some(Active {
            parent,
            type_id,
            gvt,
            iommu_group,
            nodes,
        })
    }

    fn build(
        &self,
        uuid: &Uuid,
        active: Option<Active>,
        def: Option<Definition>,
        scan: &holders::Scan,
    ) -> Instance {
        let (parent, type_id) = match (&active, &def) {
            (Some(a), _) => (a.parent.clone(), a.type_id.clone()),
            (None, Some(d)) => (d.parent.clone(), d.mdev_type.clone()),
            (None, None) => ("unknown".into(), "unknown".into()),
        };
        let ty = if self.fs.is_dir(&self.type_dir(&parent, &type_id)) {
            Some(self.read_type(&parent, &type_id))
        } else {
            None
        };
        let (holders, possible_holders, in_use) = match &active {
            Some(a) => (
                scan.holders
                    .iter()
                    .filter(|h| a.nodes.contains(&h.node))
                    .cloned()
                    .collect(),
                scan.possible
                    .iter()
                    .filter(|h| a.nodes.contains(&h.node))
                    .cloned()
                    .collect(),
                scan.in_use(&a.nodes),
            ),
            None => (Vec::new(), Vec::new(), Some(false)),
        };
        let migration = active
            .as_ref()
            .and_then(|a| a.gvt.as_ref()?.get("migration")?.as_str())
            .and_then(|t| Migration::parse(t, &type_id));
        Instance {
            uuid: *uuid,
            parent,
            type_id,
            type_name: ty.as_ref().and_then(|t| t.name.clone()),
            active: active.is_some(),
            partition: ty.as_ref().and_then(|t| t.partition.clone()),
            iommu_group: active.as_ref().and_then(|a| a.iommu_group),
            vfio_group_node: active
                .as_ref()
                .and_then(|a| a.iommu_group)
                .map(|g| format!("/dev/vfio/{g}")),
            migration,
            gvt: active.and_then(|a| a.gvt),
            in_use,
            holders,
            possible_holders,
            definition: def,
            vmm_args: VmmArgs::for_uuid(uuid),
        }
    }

    fn scan_nodes(&self, actives: &[(Uuid, Active)]) -> holders::Scan {
        let nodes: Vec<String> = actives
            .iter()
            .flat_map(|(_, a)| a.nodes.iter().cloned())
            .collect();
        holders::scan(self.fs.as_ref(), &self.root, &nodes)
    }

    /// Every vGPU: active ones and defined ones, sorted by parent then UUID.
    pub fn instances(&self) -> Vec<Instance> {
        let actives: Vec<(Uuid, Active)> = self
            .active_uuids()
            .into_iter()
            .filter_map(|u| self.read_active(&u).map(|a| (u, a)))
            .collect();
        let scan = self.scan_nodes(&actives);
        let mut defs = defs::load_all(self.fs.as_ref(), &self.root, None);
        let mut out = Vec::new();
        for (u, a) in actives {
            let d = defs
                .iter()
                .position(|d| d.uuid == u && d.parent == a.parent)
                .map(|i| defs.remove(i));
            out.push(self.build(&u, Some(a), d, &scan));
        }
        for d in defs {
            let u = d.uuid;
            out.push(self.build(&u, None, Some(d), &scan));
        }
        out.sort_by(|a, b| (&a.parent, &a.uuid).cmp(&(&b.parent, &b.uuid)));
        out
    }

    /// One vGPU by UUID (active or defined).
    pub fn instance(&self, uuid: &Uuid) -> Result<Instance, Error> {
        let active = self.read_active(uuid);
        let defs: Vec<Definition> = defs::load_all(self.fs.as_ref(), &self.root, None)
            .into_iter()
            .filter(|d| &d.uuid == uuid)
            .collect();
        let def = match &active {
            Some(a) => defs.iter().find(|d| d.parent == a.parent).cloned(),
            None => defs.first().cloned(),
        };
        if active.is_none() && def.is_none() {
            return Err(Error::UnknownUuid {
                uuid: uuid.to_string(),
            });
        }
        let scan = match &active {
            Some(a) => holders::scan(self.fs.as_ref(), &self.root, &a.nodes),
            None => holders::Scan::default(),
        };
        Ok(self.build(uuid, active, def, &scan))
    }

    fn existing_on(&self, parents: &[String]) -> Vec<ExistingInstance> {
        self.instances()
            .into_iter()
            .filter(|i| i.active && parents.contains(&i.parent))
            .map(|i| ExistingInstance {
                uuid: i.uuid.to_string(),
                parent: i.parent,
                type_id: i.type_id,
                holders: i.holders,
                possible_holders: i.possible_holders,
                in_use: i.in_use,
            })
            .collect()
    }

    // ---- type selection --------------------------------------------------------------

    /// Pick the type to create: the named one, or the smallest whose partition satisfies
    /// `req` (ordered by aperture, then high GM, then fences; gvt-rs first among equals)
    /// on a parent with instances left (when `need_instance`). `gvt_rs_only` restricts the
    /// choice to gvt-rs types (a weight or a display path was asked for).
    pub fn select_type(
        &self,
        parent: Option<&str>,
        type_id: Option<&str>,
        req: &PartitionRequest,
        need_instance: bool,
        gvt_rs_only: bool,
    ) -> Result<MdevType, Error> {
        let mut types = self.types(parent)?;
        if gvt_rs_only && type_id.is_none() {
            types.retain(|t| t.kind == TypeKind::GvtRs);
        }
        let exhausted = |what: String, types: &[MdevType]| {
            let mut parents: Vec<String> = types.iter().map(|t| t.parent.clone()).collect();
            parents.dedup();
            Error::Exhausted {
                what,
                left: types
                    .iter()
                    .filter(|t| t.left() > 0)
                    .map(TypeSummary::from)
                    .collect(),
                existing: self.existing_on(&parents),
            }
        };
        if let Some(tid) = type_id {
            let mut named: Vec<&MdevType> = types
                .iter()
                .filter(|t| t.id == tid || t.name.as_deref() == Some(tid))
                .collect();
            if named.is_empty() {
                let mut present: Vec<String> = types.iter().map(|t| t.id.clone()).collect();
                present.sort();
                present.dedup();
                return Err(Error::UnknownType {
                    type_id: tid.to_string(),
                    parent: parent.map(str::to_string),
                    present,
                });
            }
            if !req.is_empty() {
                named.retain(|t| t.partition.as_ref().is_some_and(|p| p.satisfies(req)));
                if named.is_empty() {
                    return Err(Error::NoTypeFits {
                        request: *req,
                        parent: parent.map(str::to_string),
                        offered: types
                            .iter()
                            .filter(|t| t.id == tid || t.name.as_deref() == Some(tid))
                            .map(TypeSummary::from)
                            .collect(),
                    });
                }
            }
            if !need_instance {
                return Ok(named[0].clone());
            }
            if let Some(t) = named.iter().find(|t| t.left() > 0) {
                return Ok((*t).clone());
            }
            let same_parents: Vec<MdevType> = types
                .iter()
                .filter(|t| named.iter().any(|n| n.parent == t.parent))
                .cloned()
                .collect();
            return Err(exhausted(
                format!("type {} on {}", named[0].id, named[0].parent),
                &same_parents,
            ));
        }
        if req.is_empty() {
            return Err(Error::InvalidArgument(
                "say what to create: --aperture SIZE (optionally --high-gm SIZE, --fences N) or --type TYPE; \
                 `gvtctl types` lists the types"
                    .to_string(),
            ));
        }
        let mut fitting: Vec<&MdevType> = types
            .iter()
            .filter(|t| t.partition.as_ref().is_some_and(|p| p.satisfies(req)))
            .collect();
        if fitting.is_empty() {
            return Err(Error::NoTypeFits {
                request: *req,
                parent: parent.map(str::to_string),
                offered: types
                    .iter()
                    .filter(|t| t.partition.is_some())
                    .map(TypeSummary::from)
                    .collect(),
            });
        }
        fitting.sort_by_key(|t| {
            let p = t.partition.clone().unwrap_or(Partition {
                aperture: 0,
                high_gm: 0,
                fences: 0,
                resolution: None,
                weight: None,
            });
            (
                p.aperture,
                p.high_gm,
                p.fences,
                t.kind != TypeKind::GvtRs,
                t.parent.clone(),
                t.id.clone(),
            )
        });
        if !need_instance {
            return Ok(fitting[0].clone());
        }
        match fitting.iter().find(|t| t.left() > 0) {
            Some(t) => Ok((*t).clone()),
            None => {
                let gvt_types: Vec<MdevType> = types
                    .iter()
                    .filter(|t| t.partition.is_some())
                    .cloned()
                    .collect();
                Err(exhausted(format!("{req}"), &gvt_types))
            }
        }
    }

    /// Where a migration target of vGPU `src` can be created (`gvtctl create --like`): a
    /// type with `src`'s type id (a VFIO migration stream is accepted only by a vGPU of the
    /// same type), on `parent` if given, else on `src`'s parent when it has an instance
    /// left, else on the first other parent that has one (else on `src`'s parent or the
    /// first offering one, whose creation then reports the exhaustion).
    /// [`Error::NoMigrationTarget`] when no parent (or not `parent`) offers the type.
    pub fn migration_target(
        &self,
        src: &Instance,
        parent: Option<&str>,
    ) -> Result<MdevType, Error> {
        let offering: Vec<MdevType> = self
            .types(parent)?
            .into_iter()
            .filter(|t| t.id == src.type_id)
            .collect();
        if offering.is_empty() {
            let mut offered_by: Vec<String> = self
                .types(None)
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t.id == src.type_id)
                .map(|t| t.parent)
                .collect();
            offered_by.sort();
            offered_by.dedup();
            return Err(Error::NoMigrationTarget {
                uuid: src.uuid.to_string(),
                type_id: src.type_id.clone(),
                parent: parent.map(str::to_string),
                offered_by,
            });
        }
        let own = offering.iter().find(|t| t.parent == src.parent);
        let pick = own
            .filter(|t| t.left() > 0)
            .or_else(|| offering.iter().find(|t| t.left() > 0))
            .or(own)
            .unwrap_or(&offering[0]);
        Ok(pick.clone())
    }

    // ---- create / destroy ------------------------------------------------------------

    /// Create a vGPU and wait for it to appear; optionally define it persistently.
    pub fn create(&self, req: &CreateRequest) -> Result<Instance, Error> {
        let ty = self.select_type(
            req.parent.as_deref(),
            req.type_id.as_deref(),
            &req.partition,
            true,
            req.weight.is_some() || req.display.is_some(),
        )?;
        let uuid = match &req.uuid {
            Some(u) => *u,
            None => Uuid::new_v4(),
        };
        let attrs = gvt_attrs(&ty, req.weight, req.display)?;
        if req.define.is_some() {
            if let Some(d) = self.definitions_of(&uuid, None).into_iter().next() {
                return Err(Error::AlreadyDefined {
                    uuid: uuid.to_string(),
                    path: PathBuf::from(d.path),
                });
            }
        }
        self.create_on(&ty, &uuid, &attrs)?;
        if let Some(start) = req.define {
            let def = Definition {
                uuid,
                parent: ty.parent.clone(),
                mdev_type: ty.id.clone(),
                start,
                attrs,
                path: String::new(),
            };
            defs::store(self.fs.as_ref(), &self.root, &def)?;
        }
        self.instance(&uuid)
    }

    fn create_on(
        &self,
        ty: &MdevType,
        uuid: &Uuid,
        attrs: &[(String, String)],
    ) -> Result<(), Error> {
        if let Some(a) = self.read_active(uuid) {
            return Err(Error::AlreadyExists {
                uuid: uuid.to_string(),
                parent: a.parent,
                type_id: a.type_id,
            });
        }
        let create = self.type_dir(&ty.parent, &ty.id).join("create");
        log::info!("creating {uuid}: {} -> {}", ty.id, create.display());
        if let Err(e) = self.fs.write(&create, uuid.as_string().as_bytes()) {
            return Err(match e.raw_os_error() {
                Some(libc::ENOSPC) => {
                    // ENOSPC: the driver has no room (maybe fragmentation), whatever the count said.
                    let types = self.types(Some(&ty.parent)).unwrap_or_default();
                    Error::Exhausted {
                        what: format!("type {} on {}", ty.id, ty.parent),
                        left: types
                            .iter()
                            .filter(|t| t.left() > 0 && t.id != ty.id)
                            .map(TypeSummary::from)
                            .collect(),
                        existing: self.existing_on(std::slice::from_ref(&ty.parent)),
                    }
                }
                Some(libc::EEXIST) => Error::AlreadyExists {
                    uuid: uuid.to_string(),
                    parent: ty.parent.clone(),
                    type_id: ty.id.clone(),
                },
                Some(libc::EPERM) | Some(libc::EACCES) => Error::PermissionDenied {
                    path: create,
                    action: "write".into(),
                },
                _ => Error::CreateRefused {
                    uuid: uuid.to_string(),
                    type_id: ty.id.clone(),
                    source: e,
                },
            });
        }
        let dev = self.dev_dir(uuid);
        // The device directory appears first, the mdev_type link right after (mdevctl waits
        // for the link too).
        if !self.wait_for(|| self.fs.exists(&dev.join("mdev_type"))) {
            return Err(Error::Timeout {
                uuid: uuid.to_string(),
                what: format!(
                    "was accepted by {} but did not appear in /sys/bus/mdev/devices",
                    defs::host_path(&self.root, &create)
                ),
                secs: self.timeout.as_secs_f64(),
            });
        }
        for (k, v) in attrs {
            let r = attr_allowed(k).and_then(|()| {
                self.fs
                    .write_attr(&dev, k, v.as_bytes())
                    .map_err(|e| self.attr_error(&dev, k, e))
            });
            if let Err(reason) = r {
                log::warn!(
                    "attribute {} failed ({reason}); removing {uuid} again",
                    escape(k)
                );
                let _ = self.fs.write(&dev.join("remove"), b"1");
                return Err(Error::AttrFailed {
                    uuid: uuid.to_string(),
                    attr: k.clone(),
                    value: v.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Why writing attribute `attr` of the device `dev` failed, in words. The symlink
    /// diagnosis is for the message only: the refusal itself came from the confined
    /// open ([`Sysfs::write_attr`]).
    fn attr_error(&self, dev: &Path, attr: &str, e: std::io::Error) -> String {
        if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) {
            let mut prefix = PathBuf::new();
            for c in attr.split('/') {
                prefix.push(c);
                if let Ok(t) = self.fs.read_link(&dev.join(&prefix)) {
                    return format!(
                        "'{}' is a symbolic link (to {}): an attribute must be a file of the device \
                         itself, reached without following links",
                        escape(&prefix.to_string_lossy()),
                        escape(&t.to_string_lossy())
                    );
                }
            }
        }
        match e.raw_os_error() {
            Some(libc::ENOENT) => "the device has no such attribute".to_string(),
            _ => escape(&e.to_string()).into_owned(),
        }
    }

    fn wait_for(&self, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + self.timeout;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Remove an active vGPU. Refuses (without writing `remove`, which blocks in the
    /// kernel until the VMM lets go) while a process verifiably holds its VFIO node;
    /// possible holders that cannot be verified ([`PossibleHolder`]) are warned about
    /// and do not block.
    pub fn destroy(&self, uuid: &Uuid) -> Result<Instance, Error> {
        let inst = self.instance(uuid)?;
        if !inst.active {
            return Err(Error::NotActive {
                uuid: uuid.to_string(),
                parent: inst.parent,
            });
        }
        if !inst.holders.is_empty() {
            return Err(Error::Busy {
                uuid: uuid.to_string(),
                holders: inst.holders,
                driver_refused: false,
            });
        }
        for p in &inst.possible_holders {
            // Evidence that cannot be verified does not block root (anyone could forge
            // it). If the process does hold the device, the kernel has the last word:
            // `remove` asks its VMM to release the device (VFIO request) and waits.
            log::warn!(
                "{uuid}: {p}; removing anyway (if it does hold the device, the kernel asks \
                 its VMM to release it and the removal waits until it has)"
            );
        }
        let dev = self.dev_dir(uuid);
        let remove = dev.join("remove");
        log::info!("removing {uuid}");
        if let Err(e) = self.fs.write(&remove, b"1") {
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) => Error::Busy {
                    uuid: uuid.to_string(),
                    holders: Vec::new(),
                    driver_refused: true,
                },
                Some(libc::ENOENT) => return Ok(inst), // already gone
                _ => Error::io_doing(remove, "write", e),
            });
        }
        if !self.wait_for(|| !self.fs.exists(&dev)) {
            return Err(Error::Timeout {
                uuid: uuid.to_string(),
                what: "accepted `remove` but is still present".into(),
                secs: self.timeout.as_secs_f64(),
            });
        }
        Ok(inst)
    }

    // ---- statistics ------------------------------------------------------------------

    /// Read `gvt/stats` of every active gvt-rs vGPU (or only `uuid`), with the time
    /// ([`Sysfs::now_ns`]) and the holders. A `uuid` that is not active, or has no
    /// `gvt/stats` (not a gvt-rs vGPU), is an error.
    pub fn sample(&self, uuid: Option<&Uuid>) -> Result<crate::stats::Sample, Error> {
        use crate::stats::{Sample, StatsText, VgpuSample};
        let uuids = match uuid {
            Some(u) => {
                if self.read_active(u).is_none() {
                    // Defined but stopped is "not active"; unknown is "unknown".
                    let i = self.instance(u)?;
                    return Err(Error::NotActive {
                        uuid: u.to_string(),
                        parent: i.parent,
                    });
                }
                if !self.fs.exists(&self.dev_dir(u).join("gvt/stats")) {
                    return Err(Error::InvalidArgument(format!(
                        "{u} has no gvt/stats: it is not a gvt-rs vGPU"
                    )));
                }
                vec![*u]
            }
            None => self.active_uuids(),
        };
        let at_ns = self.fs.now_ns();
        let mut actives = Vec::new();
        let mut texts = Vec::new();
        for u in uuids {
            let gdir = self.dev_dir(&u).join("gvt");
            let Some(text) = self.read_attr(&gdir.join("stats")) else {
                continue;
            };
            let Some(a) = self.read_active(&u) else {
                continue;
            };
            let weight = self
                .read_attr(&gdir.join("weight"))
                .and_then(|w| w.trim().parse().ok());
            texts.push((text, weight));
            actives.push((u, a));
        }
        let scan = self.scan_nodes(&actives);
        let vgpus = actives
            .into_iter()
            .zip(texts)
            .map(|((u, a), (text, weight))| VgpuSample {
                uuid: u,
                holders: scan
                    .holders
                    .iter()
                    .filter(|h| a.nodes.contains(&h.node))
                    .cloned()
                    .collect(),
                parent: a.parent,
                type_id: a.type_id,
                weight,
                stats: StatsText::parse(&text),
            })
            .collect();
        Ok(Sample { at_ns, vgpus })
    }

    // ---- definitions -----------------------------------------------------------------

    fn definitions_of(&self, uuid: &Uuid, parent: Option<&str>) -> Vec<Definition> {
        if parent.is_some_and(|p| check_name("parent", p).is_err()) {
            return Vec::new();
        }
        defs::load_all(self.fs.as_ref(), &self.root, parent)
            .into_iter()
            .filter(|d| &d.uuid == uuid)
            .collect()
    }

    /// All definitions (optionally of one parent).
    pub fn definitions(&self, parent: Option<&str>) -> Vec<Definition> {
        defs::load_all(self.fs.as_ref(), &self.root, parent)
    }

    fn one_definition(&self, uuid: &Uuid, parent: Option<&str>) -> Result<Definition, Error> {
        let mut ds = self.definitions_of(uuid, parent);
        match ds.len() {
            0 => {
                // A malformed file is worth reporting rather than "not defined".
                if let Some(p) = parent {
                    defs::load_one(self.fs.as_ref(), &self.root, p, uuid)?;
                }
                Err(Error::NotDefined {
                    uuid: uuid.to_string(),
                    parent: parent.map(str::to_string),
                })
            }
            1 => Ok(ds.remove(0)),
            _ => Err(Error::InvalidArgument(format!(
                "{uuid} is defined for several parents ({}); pick one with --parent",
                ds.iter()
                    .map(|d| d.parent.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Write a persistent definition (mdevctl format). An active device's parent and
    /// type are taken from sysfs when the request names none.
    pub fn define(&self, req: &DefineRequest) -> Result<Definition, Error> {
        if let Some(p) = &req.parent {
            check_name("parent", p)?;
        }
        if let Some(t) = &req.type_id {
            check_name("type", t)?;
        }
        let uuid = match &req.uuid {
            Some(u) => *u,
            None => Uuid::new_v4(),
        };
        if let Some(d) = self.definitions_of(&uuid, None).into_iter().next() {
            return Err(Error::AlreadyDefined {
                uuid: uuid.to_string(),
                path: PathBuf::from(d.path),
            });
        }
        let active = self.read_active(&uuid);
        let (parent, type_id, ty) = match (&active, &req.type_id, &req.parent) {
            (Some(a), None, p) if req.partition.is_empty() => {
                if let Some(p) = p {
                    if *p != a.parent {
                        return Err(Error::InvalidArgument(format!(
                            "{uuid} is active on {}, not {p}",
                            a.parent
                        )));
                    }
                }
                let ty = self.type_dir(&a.parent, &a.type_id);
                let ty = self
                    .fs
                    .is_dir(&ty)
                    .then(|| self.read_type(&a.parent, &a.type_id));
                (a.parent.clone(), a.type_id.clone(), ty)
            }
            (_, Some(t), Some(p)) if !self.parent_names().contains(p) => {
                // Parent absent (module not loaded): define blindly, as mdevctl does.
                if !req.partition.is_empty() {
                    return Err(Error::UnknownParent {
                        name: p.clone(),
                        present: self.parent_names(),
                    });
                }
                (p.clone(), t.clone(), None)
            }
            _ => {
                let t = self.select_type(
                    req.parent.as_deref(),
                    req.type_id.as_deref(),
                    &req.partition,
                    false,
                    req.weight.is_some() || req.display.is_some(),
                )?;
                (t.parent.clone(), t.id.clone(), Some(t))
            }
        };
        let attrs = match &ty {
            Some(t) => gvt_attrs(t, req.weight, req.display)?,
            None => unchecked_gvt_attrs(req.weight, req.display),
        };
        let mut def = Definition {
            uuid,
            parent,
            mdev_type: type_id,
            start: req.start,
            attrs,
            path: String::new(),
        };
        let path = defs::store(self.fs.as_ref(), &self.root, &def)?;
        def.path = defs::host_path(&self.root, &path);
        Ok(def)
    }

    /// Definition files that were skipped as damaged (empty, truncated, not JSON).
    pub fn damaged_definitions(&self) -> Vec<defs::DamagedDefinition> {
        defs::scan(self.fs.as_ref(), &self.root, None).damaged
    }

    /// `define --jsonfile`: a definition from a body in mdevctl's format (`mdev_type`,
    /// `start`, `attrs`, as `mdevctl define --jsonfile` takes it). The parent is
    /// `parent`, or the running device's when `uuid` is active; each attribute must be
    /// one a definition may set (as for `define`/`start`), and on a present parent the type
    /// must exist.
    pub fn define_from_json(
        &self,
        uuid: Option<Uuid>,
        parent: Option<&str>,
        text: &str,
        file: &Path,
    ) -> Result<Definition, Error> {
        let uuid = uuid.unwrap_or_else(Uuid::new_v4);
        let active = self.read_active(&uuid);
        let parent = match (parent, &active) {
            (Some(p), Some(a)) if p != a.parent => {
                return Err(Error::InvalidArgument(format!(
                    "{uuid} is active on {}, not {p}",
                    a.parent
                )))
            }
            (Some(p), _) => p.to_string(),
            (None, Some(a)) => a.parent.clone(),
            (None, None) => {
                return Err(Error::InvalidArgument(
                    "--jsonfile needs --parent (or the UUID of an active device)".into(),
                ))
            }
        };
        check_name("parent", &parent)?;
        if let Some(d) = self.definitions_of(&uuid, None).into_iter().next() {
            return Err(Error::AlreadyDefined {
                uuid: uuid.to_string(),
                path: PathBuf::from(d.path),
            });
        }
        let mut def = Definition::from_mdevctl_json(uuid, &parent, text, file, String::new())?;
        check_name("type", &def.mdev_type)?;
        for (k, _) in &def.attrs {
            attr_allowed(k).map_err(|why| Error::InvalidDefinition {
                path: file.to_path_buf(),
                reason: why,
            })?;
        }
        if self.parent_names().contains(&parent) {
            self.select_type(
                Some(&parent),
                Some(&def.mdev_type),
                &PartitionRequest::default(),
                false,
                false,
            )?;
        }
        let path = defs::store(self.fs.as_ref(), &self.root, &def)?;
        def.path = defs::host_path(&self.root, &path);
        Ok(def)
    }

    /// `modify`: set attributes of a definition (generic `path=value`, as mdevctl's
    /// `--addattr`): a key already there gets the new value in its place, a new key is
    /// appended (attributes are written in order at start). `start`, when given, changes
    /// the start mode too.
    pub fn modify(
        &self,
        uuid: &Uuid,
        parent: Option<&str>,
        attrs: &[(String, String)],
        start: Option<StartMode>,
    ) -> Result<Definition, Error> {
        for (k, _) in attrs {
            attr_allowed(k).map_err(Error::InvalidArgument)?;
        }
        let mut d = self.one_definition(uuid, parent)?;
        for (k, v) in attrs {
            match d.attrs.iter_mut().find(|(dk, _)| dk == k) {
                Some(slot) => slot.1 = v.clone(),
                None => d.attrs.push((k.clone(), v.clone())),
            }
        }
        if let Some(s) = start {
            d.start = s;
        }
        defs::store(self.fs.as_ref(), &self.root, &d)?;
        Ok(d)
    }

    /// `modify --live`: write attributes of the running device, in order, each in one
    /// `write(2)` confined to the device directory ([`Sysfs::write_attr`]); the driver
    /// takes them at once (gvt-rs: `gvt/weight` moves the scheduler's shares from its
    /// next period, `gvt/dmabuf` applies to the next display query). The definition, if
    /// any, is left as it is. Stops at the first attribute the device refuses.
    pub fn modify_live(&self, uuid: &Uuid, attrs: &[(String, String)]) -> Result<Instance, Error> {
        for (k, _) in attrs {
            attr_allowed(k).map_err(Error::InvalidArgument)?;
        }
        if self.read_active(uuid).is_none() {
            return Err(Error::UnknownUuid {
                uuid: uuid.to_string(),
            });
        }
        let dev = self.dev_dir(uuid);
        for (k, v) in attrs {
            log::info!("{uuid}: writing {} = {}", escape(k), escape(v));
            self.fs
                .write_attr(&dev, k, v.as_bytes())
                .map_err(|e| Error::AttrFailed {
                    uuid: uuid.to_string(),
                    attr: k.clone(),
                    value: v.clone(),
                    reason: match e.raw_os_error() {
                        Some(libc::EINVAL) => "the driver refused the value (EINVAL)".to_string(),
                        Some(libc::EACCES) | Some(libc::EPERM) => {
                            "not writable (a read-only attribute, or not root)".to_string()
                        }
                        _ => self.attr_error(&dev, k, e),
                    },
                })?;
        }
        self.instance(uuid)
    }

    /// Delete definitions of `uuid` (all parents, or one). Active devices keep running.
    pub fn undefine(&self, uuid: &Uuid, parent: Option<&str>) -> Result<Vec<Definition>, Error> {
        let ds = self.definitions_of(uuid, parent);
        if ds.is_empty() {
            return Err(Error::NotDefined {
                uuid: uuid.to_string(),
                parent: parent.map(str::to_string),
            });
        }
        for d in &ds {
            let p = defs::config_base(&self.root)
                .join(&d.parent)
                .join(d.uuid.as_string());
            self.fs
                .remove_file(&p)
                .map_err(|e| Error::io_doing(&p, "remove", e))?;
        }
        Ok(ds)
    }

    /// Change a definition's start mode.
    pub fn set_autostart(
        &self,
        uuid: &Uuid,
        parent: Option<&str>,
        start: StartMode,
    ) -> Result<Definition, Error> {
        let mut d = self.one_definition(uuid, parent)?;
        d.start = start;
        defs::store(self.fs.as_ref(), &self.root, &d)?;
        Ok(d)
    }

    /// Start a defined vGPU: create it with its type and write its attributes (if one
    /// fails the device is removed again, as mdevctl does).
    pub fn start(&self, uuid: &Uuid, parent: Option<&str>) -> Result<Instance, Error> {
        let d = self.one_definition(uuid, parent)?;
        self.start_def(&d)?;
        self.instance(uuid)
    }

    fn start_def(&self, d: &Definition) -> Result<(), Error> {
        let ty = self.select_type(
            Some(&d.parent),
            Some(&d.mdev_type),
            &PartitionRequest::default(),
            true,
            false,
        )?;
        self.create_on(&ty, &d.uuid, &d.attrs)
    }

    /// Start every `auto` definition (of one parent, or all) that is not running yet.
    /// This is what the udev rule runs when a parent appears.
    pub fn start_auto(&self, parent: Option<&str>) -> Vec<StartOutcome> {
        let mut out = Vec::new();
        for d in defs::load_all(self.fs.as_ref(), &self.root, parent) {
            if d.start != StartMode::Auto {
                continue;
            }
            let result = match self.read_active(&d.uuid) {
                Some(a) if a.parent == d.parent && a.type_id == d.mdev_type => {
                    Ok(StartStatus::AlreadyActive)
                }
                Some(a) => Err(Error::AlreadyExists {
                    uuid: d.uuid.to_string(),
                    parent: a.parent,
                    type_id: a.type_id,
                }),
                None => self.start_def(&d).map(|()| StartStatus::Started),
            };
            out.push(StartOutcome {
                definition: d,
                result,
            });
        }
        out
    }

    /// The gvt-rs vGPUs in IOMMU group `group` (what the udev rule for `/dev/vfio/N` asks).
    pub fn gvt_rs_in_group(&self, group: &str) -> Vec<Uuid> {
        if group.is_empty() || !group.bytes().all(|b| b.is_ascii_digit()) {
            return Vec::new();
        }
        let dir = self
            .root
            .join("sys/kernel/iommu_groups")
            .join(group)
            .join("devices");
        self.fs
            .read_dir(&dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| Uuid::parse(&n).ok())
            .filter(|u| {
                self.link_name(&dir.join(u.as_string()).join("mdev_type"))
                    .is_some_and(|t| TypeKind::of(&t) == TypeKind::GvtRs)
            })
            .collect()
    }

    /// Stop (remove) an active vGPU; its definition stays.
    pub fn stop(&self, uuid: &Uuid) -> Result<Instance, Error> {
        self.destroy(uuid)
    }
}

/// A parent or type name must be one path component (they become directory names).
fn check_name(what: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "invalid {what} name '{name}'"
        )));
    }
    Ok(())
}

/// A definition's attribute is a relative path of plain names inside the device
/// directory (the open itself refuses symbolic links, [`Sysfs::write_attr`]), and not
/// one of the driver core's control files: `remove` (lifecycle is gvtctl's job) and
/// `uevent` (it replays device events to udev).
fn attr_allowed(attr: &str) -> Result<(), String> {
    if attr.is_empty()
        || attr.starts_with('/')
        || attr.contains('\0')
        || !attr
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
    {
        return Err("attribute paths must stay inside the device directory".to_string());
    }
    if attr
        .split('/')
        .next_back()
        .is_some_and(|n| n == "remove" || n == "uevent")
    {
        return Err(format!(
            "'{}' is a control file of the driver core, not a device attribute",
            escape(attr)
        ));
    }
    Ok(())
}

/// The `gvt/` attributes a request sets (weight, display path), without the type check.
fn unchecked_gvt_attrs(weight: Option<u32>, display: Option<DisplayPath>) -> Vec<(String, String)> {
    let mut attrs = Vec::new();
    if let Some(w) = weight {
        attrs.push(("gvt/weight".to_string(), w.to_string()));
    }
    if let Some(d) = display {
        attrs.push(("gvt/dmabuf".to_string(), d.dmabuf_attr().to_string()));
    }
    attrs
}

/// The attribute list that sets a gvt-rs vGPU's scheduler weight and display path.
fn gvt_attrs(
    ty: &MdevType,
    weight: Option<u32>,
    display: Option<DisplayPath>,
) -> Result<Vec<(String, String)>, Error> {
    if ty.kind != TypeKind::GvtRs {
        let what = match (weight, display) {
            (None, None) => return Ok(Vec::new()),
            (Some(_), _) => "--weight applies to gvt-rs types only; {} has no writable weight (its weight is fixed by the type)",
            (None, Some(_)) => "--display applies to gvt-rs types only; {} has no gvt/dmabuf switch",
        };
        return Err(Error::InvalidArgument(what.replace("{}", &ty.id)));
    }
    if weight == Some(0) {
        return Err(Error::InvalidArgument("--weight must be at least 1".into()));
    }
    Ok(unchecked_gvt_attrs(weight, display))
}
