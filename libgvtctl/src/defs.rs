//! Persistent definitions in mdevctl's format and location, so a vGPU defined with
//! gvtctl is started by mdevctl and vice versa.
//!
//! `/etc/mdevctl.d/<parent>/<uuid>` holds (mdevctl writes it with 2-space indentation
//! and no trailing newline):
//!
//! ```json
//! {
//!   "mdev_type": "gvt_rs-GVTsim_64M",
//!   "start": "auto",
//!   "attrs": [
//!     {
//!       "gvt/weight": "8"
//!     }
//!   ]
//! }
//! ```
//!
//! `attrs` is an ordered list of single-entry objects; each key is a path relative to
//! the device directory, written in order after the device is created. Like mdevctl,
//! a missing `attrs` is an empty list and any `start` other than `"auto"` is manual.

use crate::error::Error;
use crate::sysfs::Sysfs;
use crate::uuid::Uuid;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Whether a definition is started when its parent appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartMode {
    Auto,
    Manual,
}

impl StartMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StartMode::Auto => "auto",
            StartMode::Manual => "manual",
        }
    }
}

/// One persistent definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Definition {
    pub uuid: Uuid,
    pub parent: String,
    #[serde(rename = "type")]
    pub mdev_type: String,
    pub start: StartMode,
    /// `(attribute path, value)` in the order they are written.
    #[serde(serialize_with = "ser_attrs")]
    #[schemars(with = "Vec<std::collections::BTreeMap<String, String>>")]
    pub attrs: Vec<(String, String)>,
    /// The file it lives in (as the host sees it, without `--root`).
    pub path: String,
}

/// One entry of `attrs`: a single-field object `{"<path>": "<value>"}`.
struct AttrEntry(String, String);

impl Serialize for AttrEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(&self.0, &self.1)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for AttrEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error as _, MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AttrEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an attribute object with exactly one string field")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<AttrEntry, A::Error> {
                let Some(k) = m.next_key::<String>()? else {
                    return Err(A::Error::custom(
                        "attribute object must have exactly one field",
                    ));
                };
                let v: serde_json::Value = m.next_value()?;
                let serde_json::Value::String(v) = v else {
                    return Err(A::Error::custom(format!(
                        "value of attribute '{}' is not a string",
                        crate::escape::escape(&k)
                    )));
                };
                if m.next_key::<String>()?.is_some() {
                    return Err(A::Error::custom(
                        "attribute object must have exactly one field",
                    ));
                }
                Ok(AttrEntry(k, v))
            }
        }
        d.deserialize_map(V)
    }
}

fn ser_attrs<S: serde::Serializer>(attrs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(attrs.iter().map(|(k, v)| AttrEntry(k.clone(), v.clone())))
}

/// `start` as mdevctl reads it: `"auto"` is automatic, any other value manual, and a
/// missing or null `start` is an error.
fn de_start<'de, D: serde::Deserializer<'de>>(d: D) -> Result<StartMode, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) if s == "auto" => Ok(StartMode::Auto),
        serde_json::Value::Null => Err(serde::de::Error::custom("missing field `start`")),
        _ => Ok(StartMode::Manual),
    }
}

/// A definition file's body, field for field in mdevctl's order (`mdev_type`, `start`,
/// `attrs`). Unknown fields are ignored, as mdevctl ignores them.
#[derive(Serialize, Deserialize)]
struct DefFile {
    mdev_type: String,
    #[serde(deserialize_with = "de_start")]
    start: StartMode,
    #[serde(default, deserialize_with = "de_attrs", serialize_with = "ser_attrs")]
    attrs: Vec<(String, String)>,
}

/// `attrs`: a list of single-field objects; missing or null is an empty list.
fn de_attrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    let v: Option<Vec<AttrEntry>> = Option::deserialize(d)?;
    Ok(v.unwrap_or_default()
        .into_iter()
        .map(|AttrEntry(k, v)| (k, v))
        .collect())
}

/// The directory holding definitions, under `root`.
pub fn config_base(root: &Path) -> PathBuf {
    root.join("etc/mdevctl.d")
}

impl Definition {
    /// Render the file body exactly as mdevctl writes it (serde_json's pretty printer
    /// indents by two spaces, as mdevctl's; no trailing newline).
    pub fn to_mdevctl_json(&self) -> String {
        let f = DefFile {
            mdev_type: self.mdev_type.clone(),
            start: self.start,
            attrs: self.attrs.clone(),
        };
        // Serialising plain strings cannot fail.
        serde_json::to_string_pretty(&f).unwrap_or_default()
    }

    /// Parse a definition file body (mdevctl's rules: `mdev_type` and `start` required).
    pub fn from_mdevctl_json(
        uuid: Uuid,
        parent: &str,
        text: &str,
        file: &Path,
        shown: String,
    ) -> Result<Definition, Error> {
        let f: DefFile = serde_json::from_str(text).map_err(|e| Error::InvalidDefinition {
            path: file.to_path_buf(),
            reason: if text.trim().is_empty() {
                "empty file".to_string()
            } else {
                format!("not an mdevctl definition: {e}")
            },
        })?;
        Ok(Definition {
            uuid,
            parent: parent.to_string(),
            mdev_type: f.mdev_type,
            start: f.start,
            attrs: f.attrs,
            path: shown,
        })
    }
}

/// A definition file that could not be read or parsed (empty, truncated, not JSON):
/// listed apart, so that one damaged file does not hide the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DamagedDefinition {
    /// The file, as the host sees it.
    pub path: String,
    /// Why it was skipped (escaped).
    pub reason: String,
}

/// What [`scan`] found: the definitions, and the files it skipped.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub definitions: Vec<Definition>,
    pub damaged: Vec<DamagedDefinition>,
}

/// Load every definition under `root` (optionally only one parent). Files that are not
/// named by a UUID (mdevctl's `scripts.d`, editor backups, a writer's hidden temporary
/// file) are not definitions; malformed ones are reported in [`Loaded::damaged`] (and
/// logged as warnings) and skipped, so one bad file does not hide the rest.
pub fn scan(fs: &dyn Sysfs, root: &Path, parent: Option<&str>) -> Loaded {
    let base = config_base(root);
    let parents = match parent {
        Some(p) => vec![p.to_string()],
        None => fs.read_dir(&base).unwrap_or_default(),
    };
    let mut out = Loaded::default();
    for p in parents {
        let dir = base.join(&p);
        if !fs.is_dir(&dir) {
            continue;
        }
        for name in fs.read_dir(&dir).unwrap_or_default() {
            let Ok(uuid) = Uuid::parse(&name) else {
                continue;
            };
            if uuid.as_string() != name {
                continue;
            }
            match load_one(fs, root, &p, &uuid) {
                Ok(Some(d)) => out.definitions.push(d),
                Ok(None) => {}
                Err(e) => {
                    let path = host_path(root, &dir.join(&name));
                    let reason = match e {
                        Error::InvalidDefinition { reason, .. } => reason,
                        e => e.to_string(),
                    };
                    let reason = crate::escape::escape(&reason).into_owned();
                    log::warn!(
                        "skipping damaged definition {}: {reason}",
                        crate::escape::escape(&path)
                    );
                    out.damaged.push(DamagedDefinition { path, reason });
                }
            }
        }
    }
    out
}

/// The definitions [`scan`] finds (damaged files skipped, with a warning).
pub fn load_all(fs: &dyn Sysfs, root: &Path, parent: Option<&str>) -> Vec<Definition> {
    scan(fs, root, parent).definitions
}

/// Load `/etc/mdevctl.d/<parent>/<uuid>` if it exists.
pub fn load_one(
    fs: &dyn Sysfs,
    root: &Path,
    parent: &str,
    uuid: &Uuid,
) -> Result<Option<Definition>, Error> {
    let path = config_base(root).join(parent).join(uuid.as_string());
    if !fs.exists(&path) {
        return Ok(None);
    }
    let text = fs
        .read_to_string(&path)
        .map_err(|e| Error::io_doing(&path, "read", e))?;
    let shown = host_path(root, &path);
    Definition::from_mdevctl_json(*uuid, parent, &text, &path, shown).map(Some)
}

/// Write a definition file (creating `/etc/mdevctl.d/<parent>/`), atomically
/// ([`Sysfs::write_file`]: a reader, mdevctl included, never sees a partial file).
pub fn store(fs: &dyn Sysfs, root: &Path, def: &Definition) -> Result<PathBuf, Error> {
    let dir = config_base(root).join(&def.parent);
    fs.create_dir_all(&dir)
        .map_err(|e| Error::io_doing(&dir, "create directory", e))?;
    let path = dir.join(def.uuid.as_string());
    fs.write_file(&path, def.to_mdevctl_json().as_bytes())
        .map_err(|e| Error::io_doing(&path, "write", e))?;
    Ok(path)
}

/// The path as the host sees it: `path` with `root` stripped.
pub fn host_path(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u() -> Uuid {
        Uuid::parse("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001").unwrap()
    }

    #[test]
    fn writes_mdevctl_format_exactly() {
        let d = Definition {
            uuid: u(),
            parent: "0000:00:02.0".into(),
            mdev_type: "i915-GVTg_V5_4".into(),
            start: StartMode::Manual,
            attrs: vec![],
            path: String::new(),
        };
        assert_eq!(
            d.to_mdevctl_json(),
            "{\n  \"mdev_type\": \"i915-GVTg_V5_4\",\n  \"start\": \"manual\",\n  \"attrs\": []\n}"
        );
        let d = Definition {
            start: StartMode::Auto,
            attrs: vec![("gvt/weight".into(), "8".into())],
            ..d
        };
        assert_eq!(
            d.to_mdevctl_json(),
            "{\n  \"mdev_type\": \"i915-GVTg_V5_4\",\n  \"start\": \"auto\",\n  \"attrs\": [\n    {\n      \"gvt/weight\": \"8\"\n    }\n  ]\n}"
        );
    }

    #[test]
    fn reads_what_mdevctl_writes() {
        // Verbatim shapes mdevctl produces (with and without attrs).
        let p = Path::new("/x");
        let d = Definition::from_mdevctl_json(
            u(),
            "p",
            "{\n  \"mdev_type\": \"i915-GVTg_V5_4\",\n  \"start\": \"manual\"\n}",
            p,
            String::new(),
        )
        .unwrap();
        assert_eq!(
            (d.mdev_type.as_str(), d.start, d.attrs.len()),
            ("i915-GVTg_V5_4", StartMode::Manual, 0)
        );
        let d = Definition::from_mdevctl_json(u(), "p",
            r#"{"mdev_type":"vfio_ap-passthrough","start":"auto","attrs":[{"assign_adapter":"5"},{"assign_domain":"0xab"}]}"#, p, String::new()).unwrap();
        assert_eq!(d.start, StartMode::Auto);
        assert_eq!(
            d.attrs,
            vec![
                ("assign_adapter".into(), "5".into()),
                ("assign_domain".into(), "0xab".into())
            ]
        );
        let back = Definition::from_mdevctl_json(u(), "p", &d.to_mdevctl_json(), p, String::new())
            .unwrap();
        assert_eq!(back, d);
    }

    /// Files as mdevctl 1.4 writes them (serde_json pretty, two spaces, no trailing
    /// newline) are read and written back byte for byte; fields mdevctl may add later are
    /// ignored, as mdevctl ignores them.
    #[test]
    fn mdevctl_files_round_trip_byte_for_byte() {
        let p = Path::new("/x");
        for text in [
            "{\n  \"mdev_type\": \"i915-GVTg_V5_4\",\n  \"start\": \"manual\",\n  \"attrs\": []\n}",
            "{\n  \"mdev_type\": \"gvt_rs-GVTsim_64M\",\n  \"start\": \"auto\",\n  \"attrs\": [\n    {\n      \"gvt/weight\": \"8\"\n    },\n    {\n      \"gvt/dmabuf\": \"0\"\n    }\n  ]\n}",
            "{\n  \"mdev_type\": \"vfio_ap-passthrough\",\n  \"start\": \"auto\",\n  \"attrs\": [\n    {\n      \"assign_adapter\": \"5\"\n    },\n    {\n      \"assign_domain\": \"0xab\"\n    },\n    {\n      \"assign_adapter\": \"6\"\n    }\n  ]\n}",
        ] {
            let d = Definition::from_mdevctl_json(u(), "p", text, p, String::new()).unwrap();
            assert_eq!(d.to_mdevctl_json(), text);
        }
        let d = Definition::from_mdevctl_json(
            u(),
            "p",
            r#"{"mdev_type":"t","start":"auto","attrs":[],"comment":"x","version":2}"#,
            p,
            String::new(),
        )
        .unwrap();
        assert_eq!((d.mdev_type.as_str(), d.start), ("t", StartMode::Auto));
        // Any start other than "auto" is manual; attrs null is none.
        for start in [r#""manual""#, r#""x""#, "1", "{}"] {
            let text = format!(r#"{{"mdev_type":"t","start":{start},"attrs":null}}"#);
            let d = Definition::from_mdevctl_json(u(), "p", &text, p, String::new()).unwrap();
            assert_eq!((d.start, d.attrs.len()), (StartMode::Manual, 0), "{text}");
        }
        let e = Definition::from_mdevctl_json(u(), "p", " \n", p, String::new()).unwrap_err();
        assert!(e.to_string().contains("empty file"), "{e}");
    }

    #[test]
    fn rejects_malformed() {
        let p = Path::new("/x");
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"mdev_type":"t"}"#,
            r#"{"start":"auto"}"#,
            r#"{"mdev_type":1,"start":"auto"}"#,
            r#"{"mdev_type":"t","start":"auto","attrs":{}}"#,
            r#"{"mdev_type":"t","start":"auto","attrs":[1]}"#,
            r#"{"mdev_type":"t","start":"auto","attrs":[{"a":"1","b":"2"}]}"#,
            r#"{"mdev_type":"t","start":"auto","attrs":[{"a":1}]}"#,
            r#"{"mdev_type":"t","start":null}"#,
            r#"{"mdev_type":"t","start":"auto","attrs":[{}]}"#,
            r#"{"mdev_type":"t","start":"auto""#,
        ] {
            let e = Definition::from_mdevctl_json(u(), "p", bad, p, String::new()).unwrap_err();
            assert!(matches!(e, Error::InvalidDefinition { .. }), "{bad}");
        }
    }
}
