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
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Whether a definition is started when its parent appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Definition {
    pub uuid: Uuid,
    pub parent: String,
    #[serde(rename = "type")]
    pub mdev_type: String,
    pub start: StartMode,
    /// `(attribute path, value)` in the order they are written.
    #[serde(serialize_with = "ser_attrs")]
    pub attrs: Vec<(String, String)>,
    /// The file it lives in (as the host sees it, without `--root`).
    pub path: String,
}

fn ser_attrs<S: serde::Serializer>(attrs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(attrs.len()))?;
    for (k, v) in attrs {
        let mut m = serde_json::Map::new();
        m.insert(k.clone(), serde_json::Value::String(v.clone()));
        seq.serialize_element(&m)?;
    }
    seq.end()
}

/// The directory holding definitions, under `root`.
pub fn config_base(root: &Path) -> PathBuf {
    root.join("etc/mdevctl.d")
}

impl Definition {
    /// Render the file body exactly as mdevctl writes it.
    pub fn to_mdevctl_json(&self) -> String {
        #[derive(Serialize)]
        struct File<'a> {
            mdev_type: &'a str,
            start: &'a str,
            #[serde(serialize_with = "ser_attrs")]
            attrs: &'a [(String, String)],
        }
        let f = File {
            mdev_type: &self.mdev_type,
            start: self.start.as_str(),
            attrs: &self.attrs,
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
        let bad = |reason: String| Error::InvalidDefinition {
            path: file.to_path_buf(),
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let mdev_type = obj
            .get("mdev_type")
            .and_then(|t| t.as_str())
            .ok_or_else(|| bad("missing string field \"mdev_type\"".into()))?
            .to_string();
        let start = match obj.get("start") {
            Some(serde_json::Value::String(s)) if s == "auto" => StartMode::Auto,
            Some(serde_json::Value::Null) | None => {
                return Err(bad("missing field \"start\"".into()))
            }
            Some(_) => StartMode::Manual,
        };
        let mut attrs = Vec::new();
        match obj.get("attrs") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(items)) => {
                for item in items {
                    let o = item
                        .as_object()
                        .ok_or_else(|| bad("attribute is not an object".into()))?;
                    if o.len() != 1 {
                        return Err(bad("attribute object must have exactly one field".into()));
                    }
                    for (k, val) in o {
                        let s = val.as_str().ok_or_else(|| {
                            bad(format!(
                                "value of attribute '{}' is not a string",
                                crate::escape::escape(k)
                            ))
                        })?;
                        attrs.push((k.clone(), s.to_string()));
                    }
                }
            }
            Some(_) => return Err(bad("\"attrs\" is not an array".into())),
        }
        Ok(Definition {
            uuid,
            parent: parent.to_string(),
            mdev_type,
            start,
            attrs,
            path: shown,
        })
    }
}

/// Load every definition under `root` (optionally only one parent). Files that are not
/// named by a UUID (mdevctl's `scripts.d`, editor backups) are skipped; malformed ones are
/// skipped with a warning so one bad file does not hide the rest.
pub fn load_all(fs: &dyn Sysfs, root: &Path, parent: Option<&str>) -> Vec<Definition> {
    let base = config_base(root);
    let parents = match parent {
        Some(p) => vec![p.to_string()],
        None => fs.read_dir(&base).unwrap_or_default(),
    };
    let mut out = Vec::new();
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
                Ok(Some(d)) => out.push(d),
                Ok(None) => {}
                Err(e) => log::warn!(
                    "skipping {}: {e}",
                    crate::escape::escape(&dir.join(&name).to_string_lossy())
                ),
            }
        }
    }
    out
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
    Definition::from_mdevctl_json(uuid.clone(), parent, &text, &path, shown).map(Some)
}

/// Write a definition file (creating `/etc/mdevctl.d/<parent>/`).
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
        ] {
            let e = Definition::from_mdevctl_json(u(), "p", bad, p, String::new()).unwrap_err();
            assert!(matches!(e, Error::InvalidDefinition { .. }), "{bad}");
        }
    }
}
