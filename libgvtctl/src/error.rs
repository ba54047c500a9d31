//! Errors that say what to do next. Each maps to a documented process exit code
//! ([`Error::exit_code`]) and a stable machine-readable [`Error::kind`].

use crate::escape::escape;
use crate::holders::{Holder, PossibleHolder};
use crate::types::{PartitionRequest, TypeSummary};
use std::fmt::Write as _;
use std::path::PathBuf;

/// An existing vGPU, as shown when resources are exhausted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct ExistingInstance {
    pub uuid: String,
    pub parent: String,
    #[serde(rename = "type")]
    pub type_id: String,
    /// Processes holding its VFIO node; empty when idle or unknown.
    pub holders: Vec<Holder>,
    /// Processes that may hold it (could not be verified).
    pub possible_holders: Vec<PossibleHolder>,
    /// `Some(false)` idle, `Some(true)` in use, `None` could not tell (no permission).
    pub in_use: Option<bool>,
}

/// Exit codes of the `gvtctl` binary (documented in its README and `--help`).
pub mod exit {
    pub const OK: i32 = 0;
    /// I/O or other unexpected failure.
    pub const FAILURE: i32 = 1;
    /// Bad command line or bad value (size, UUID).
    pub const USAGE: i32 = 2;
    /// Something named does not exist: parent (module not loaded), type, UUID, definition.
    pub const NOT_FOUND: i32 = 3;
    /// No type fits the request, or no instances left.
    pub const NO_RESOURCES: i32 = 4;
    /// The vGPU is in use by a VMM.
    pub const BUSY: i32 = 5;
    /// Permission denied (needs root, or membership of the VFIO group).
    pub const PERMISSION: i32 = 6;
    /// The device did not appear in time after `create`.
    pub const TIMEOUT: i32 = 7;
    /// Already exists / already defined.
    pub const CONFLICT: i32 = 8;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no mdev parent device found in {}: is the gvt_rs module loaded? (modprobe gvt_rs)", dir.display())]
    NoParent { dir: PathBuf },

    #[error("mdev parent '{name}' not found; parents present: {}{}{}", list_or_none(present),
        if present.is_empty() { " (is the gvt_rs module loaded? modprobe gvt_rs)" } else { "" },
        pci_parent_hint(name))]
    UnknownParent { name: String, present: Vec<String> },

    #[error("mdev type '{type_id}' not found{}; types present: {}",
        parent.as_ref().map(|p| format!(" on {p}")).unwrap_or_default(), list_or_none(present))]
    UnknownType {
        type_id: String,
        parent: Option<String>,
        present: Vec<String>,
    },

    #[error("{}", no_type_fits(request, offered, parent.as_deref()))]
    NoTypeFits {
        request: PartitionRequest,
        offered: Vec<TypeSummary>,
        /// The parent the request was restricted to (`--parent`), if any.
        parent: Option<String>,
    },

    #[error(
        "no parent{} offers type {type_id} of vGPU {uuid}: a VFIO migration stream is accepted \
        only by a vGPU of the same type{}",
        parent.as_ref().map(|p| format!(" named {p}")).unwrap_or_default(),
        if offered_by.is_empty() { String::new() } else { format!("; parents offering it: {}", offered_by.join(", ")) })]
    NoMigrationTarget {
        uuid: String,
        type_id: String,
        /// The parent the target was restricted to (`--parent`), if any.
        parent: Option<String>,
        /// The parents that offer the type.
        offered_by: Vec<String>,
    },

    #[error("{}", exhausted(what, left, existing))]
    Exhausted {
        what: String,
        left: Vec<TypeSummary>,
        existing: Vec<ExistingInstance>,
    },

    #[error("permission denied: cannot {action} {}: run gvtctl as root (sudo gvtctl ...); \
        a VMM run as a user needs read/write access to /dev/vfio/N, which the udev rule \
        70-gvt-rs-vfio.rules gives to a group (add the user to it)", path.display())]
    PermissionDenied { path: PathBuf, action: String },

    #[error(
        "no mediated device {uuid}: it is neither active (/sys/bus/mdev/devices) nor defined \
        (/etc/mdevctl.d); `gvtctl list` shows the known ones"
    )]
    UnknownUuid { uuid: String },

    #[error(
        "invalid UUID '{input}': expected the form 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001 \
        (leave it out and gvtctl generates one)"
    )]
    InvalidUuid { input: String },

    #[error("{}", busy(uuid, holders, *driver_refused))]
    Busy {
        uuid: String,
        holders: Vec<Holder>,
        driver_refused: bool,
    },

    #[error(
        "mediated device {uuid} already exists (on {parent}, type {type_id}); pick another UUID \
        or leave --uuid out"
    )]
    AlreadyExists {
        uuid: String,
        parent: String,
        type_id: String,
    },

    #[error("{uuid} is not defined{}; `gvtctl list` shows definitions (DEFINED column)",
        parent.as_ref().map(|p| format!(" for parent {p}")).unwrap_or_default())]
    NotDefined {
        uuid: String,
        parent: Option<String>,
    },

    #[error("{uuid} is already defined in {}; `gvtctl undefine {uuid}` first to redefine it", path.display())]
    AlreadyDefined { uuid: String, path: PathBuf },

    #[error("{uuid} {what} within {secs}s; check `dmesg` for the driver's message")]
    Timeout {
        uuid: String,
        what: String,
        secs: f64,
    },

    #[error(
        "{uuid} is defined (for {parent}) but not running: `gvtctl start {uuid}` starts it, \
        `gvtctl undefine {uuid}` forgets it"
    )]
    NotActive { uuid: String, parent: String },

    #[error("the driver refused to create {uuid} of type {type_id} ({source}); check `dmesg` for its reason")]
    CreateRefused {
        uuid: String,
        type_id: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "could not set attribute '{}' of {uuid} to '{}': {reason}",
        escape(attr),
        escape(value)
    )]
    AttrFailed {
        uuid: String,
        attr: String,
        value: String,
        reason: String,
    },

    #[error(
        "invalid size '{input}' ({reason}): accepted forms are {}",
        crate::size::ACCEPTED_SIZE_FORMS
    )]
    InvalidSize { input: String, reason: String },

    #[error("invalid mdevctl definition {}: {reason}", path.display())]
    InvalidDefinition { path: PathBuf, reason: String },

    #[error("{0}")]
    InvalidArgument(String),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error at `path`; permission errors become [`Error::PermissionDenied`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Self::io_doing(path, "access", source)
    }

    /// Like [`Error::io`], naming what was attempted (`"write"`, `"read"`).
    pub fn io_doing(path: impl Into<PathBuf>, action: &str, source: std::io::Error) -> Error {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            Error::PermissionDenied {
                path,
                action: action.to_string(),
            }
        } else {
            Error::Io { path, source }
        }
    }

    /// Process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NoParent { .. }
            | Error::UnknownParent { .. }
            | Error::UnknownType { .. }
            | Error::UnknownUuid { .. }
            | Error::NotDefined { .. }
            | Error::NotActive { .. }
            | Error::NoMigrationTarget { .. } => exit::NOT_FOUND,
            Error::NoTypeFits { .. } | Error::Exhausted { .. } => exit::NO_RESOURCES,
            Error::Busy { .. } => exit::BUSY,
            Error::PermissionDenied { .. } => exit::PERMISSION,
            Error::Timeout { .. } => exit::TIMEOUT,
            Error::AlreadyExists { .. } | Error::AlreadyDefined { .. } => exit::CONFLICT,
            Error::InvalidUuid { .. } | Error::InvalidSize { .. } | Error::InvalidArgument(_) => {
                exit::USAGE
            }
            Error::CreateRefused { .. }
            | Error::AttrFailed { .. }
            | Error::InvalidDefinition { .. }
            | Error::Io { .. } => exit::FAILURE,
        }
    }

    /// Stable machine-readable name, used as `error.kind` in `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NoParent { .. } => "no-parent",
            Error::UnknownParent { .. } => "unknown-parent",
            Error::UnknownType { .. } => "unknown-type",
            Error::NoTypeFits { .. } => "no-type-fits",
            Error::Exhausted { .. } => "exhausted",
            Error::NoMigrationTarget { .. } => "no-migration-target",
            Error::PermissionDenied { .. } => "permission-denied",
            Error::UnknownUuid { .. } => "unknown-uuid",
            Error::InvalidUuid { .. } => "invalid-uuid",
            Error::Busy { .. } => "busy",
            Error::AlreadyExists { .. } => "already-exists",
            Error::NotDefined { .. } => "not-defined",
            Error::AlreadyDefined { .. } => "already-defined",
            Error::Timeout { .. } => "timeout",
            Error::NotActive { .. } => "not-active",
            Error::CreateRefused { .. } => "create-refused",
            Error::AttrFailed { .. } => "attribute-failed",
            Error::InvalidSize { .. } => "invalid-size",
            Error::InvalidDefinition { .. } => "invalid-definition",
            Error::InvalidArgument(_) => "invalid-argument",
            Error::Io { .. } => "io",
        }
    }
}

/// The facts behind an error, for `--json` (`error.details`): what a program needs to
/// act on it without parsing the message. Only the fields that apply are present.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct ErrorDetails {
    /// The partition asked for (no-type-fits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<PartitionRequest>,
    /// Types that are offered (no-type-fits) or still have room (exhausted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_types: Option<Vec<TypeSummary>>,
    /// The vGPUs that use the room, with their holders (exhausted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing: Option<Vec<ExistingInstance>>,
    /// The processes holding the vGPU (busy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holders: Option<Vec<Holder>>,
    /// Whether the driver itself refused (busy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_refused: Option<bool>,
    /// The parents or types present (unknown-parent, unknown-type).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present: Option<Vec<String>>,
    /// The file or path concerned (invalid-definition, permission-denied, io).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The UUID concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

impl Error {
    /// The structured facts of this error ([`ErrorDetails`]); `None` when the message
    /// says it all.
    pub fn details(&self) -> Option<ErrorDetails> {
        let d = ErrorDetails::default();
        let path = |p: &std::path::Path| Some(p.display().to_string());
        Some(match self {
            Error::NoTypeFits {
                request, offered, ..
            } => ErrorDetails {
                request: Some(*request),
                free_types: Some(offered.clone()),
                ..d
            },
            Error::Exhausted { left, existing, .. } => ErrorDetails {
                free_types: Some(left.clone()),
                existing: Some(existing.clone()),
                ..d
            },
            Error::Busy {
                uuid,
                holders,
                driver_refused,
            } => ErrorDetails {
                uuid: Some(uuid.clone()),
                holders: Some(holders.clone()),
                driver_refused: Some(*driver_refused),
                ..d
            },
            Error::UnknownParent { present, .. } | Error::UnknownType { present, .. } => {
                ErrorDetails {
                    present: Some(present.clone()),
                    ..d
                }
            }
            Error::NoMigrationTarget {
                uuid, offered_by, ..
            } => ErrorDetails {
                uuid: Some(uuid.clone()),
                present: Some(offered_by.clone()),
                ..d
            },
            Error::InvalidDefinition { path: p, .. }
            | Error::PermissionDenied { path: p, .. }
            | Error::Io { path: p, .. } => ErrorDetails { path: path(p), ..d },
            Error::UnknownUuid { uuid }
            | Error::NotDefined { uuid, .. }
            | Error::NotActive { uuid, .. }
            | Error::AlreadyExists { uuid, .. }
            | Error::Timeout { uuid, .. }
            | Error::CreateRefused { uuid, .. }
            | Error::AttrFailed { uuid, .. } => ErrorDetails {
                uuid: Some(uuid.clone()),
                ..d
            },
            Error::AlreadyDefined { uuid, path: p } => ErrorDetails {
                uuid: Some(uuid.clone()),
                path: path(p),
                ..d
            },
            Error::NoParent { .. }
            | Error::InvalidUuid { .. }
            | Error::InvalidSize { .. }
            | Error::InvalidArgument(_) => return None,
        })
    }
}

/// Whether `name` is a PCI address as the kernel names functions (`0000:00:04.0`).
fn is_pci_address(name: &str) -> bool {
    let b = name.as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && hex(0..4)
        && hex(5..7)
        && hex(8..10)
        && (b'0'..=b'7').contains(&b[11])
}

/// How a PCI function becomes a gvt_rs parent, when an absent parent is named like one.
fn pci_parent_hint(name: &str) -> String {
    if is_pci_address(name) {
        format!(
            "; to make the PCI function {name} a gvt_rs parent: \
             echo gvt_rs > /sys/bus/pci/devices/{name}/driver_override; \
             echo {name} > /sys/bus/pci/drivers_probe"
        )
    } else {
        String::new()
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

fn holders_text(h: &[Holder]) -> String {
    h.iter()
        .map(|h| format!("{} (pid {})", h.command, h.pid))
        .collect::<Vec<_>>()
        .join(", ")
}

fn no_type_fits(
    request: &PartitionRequest,
    offered: &[TypeSummary],
    parent: Option<&str>,
) -> String {
    let mut s = format!("no mdev type provides {request}");
    if offered.is_empty() && parent.is_some() {
        let p = parent.unwrap_or_default();
        let _ = write!(
            s,
            "; parent {p} offers no type with a graphics-memory partition: name one with --type (`gvtctl types --parent {p}` lists them)"
        );
        return s;
    }
    if offered.is_empty() {
        s.push_str("; no parent offers a type with a graphics-memory partition (is the gvt_rs module loaded? modprobe gvt_rs)");
        return s;
    }
    s.push_str("; types offered:");
    for t in offered {
        let _ = write!(s, "\n  {t}");
    }
    s.push_str("\nask for at most what one of these gives, or name one with --type");
    s
}

fn exhausted(what: &str, left: &[TypeSummary], existing: &[ExistingInstance]) -> String {
    let mut s =
        format!("no instances left for {what} (the kernel would answer 'No space left on device')");
    if left.is_empty() {
        s.push_str("\nstill available: nothing");
    } else {
        s.push_str("\nstill available:");
        for t in left {
            let _ = write!(s, "\n  {t}");
        }
    }
    if !existing.is_empty() {
        s.push_str("\nexisting vGPUs holding the resources:");
        for e in existing {
            let use_text = match e.in_use {
                Some(true) => format!("in use by {}", holders_text(&e.holders)),
                Some(false) => "idle".to_string(),
                None if !e.possible_holders.is_empty() => format!(
                    "in use: cannot tell ({})",
                    e.possible_holders
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                None => "in use: unknown (run as root to see)".to_string(),
            };
            let _ = write!(
                s,
                "\n  {} {} on {}: {}",
                e.uuid, e.type_id, e.parent, use_text
            );
        }
        if existing.iter().any(|e| e.in_use == Some(false)) {
            s.push_str("\nfree resources with `gvtctl destroy UUID` on an idle vGPU, or ask for a smaller partition");
        } else {
            s.push_str("\nshut down a VM using one of them, or ask for a smaller partition");
        }
    }
    s
}

fn busy(uuid: &str, holders: &[Holder], driver_refused: bool) -> String {
    let mut s = format!("vGPU {uuid} is in use");
    if !holders.is_empty() {
        let _ = write!(s, " by {}", holders_text(holders));
    } else if driver_refused {
        s.push_str(" (the driver refused removal with EBUSY)");
    }
    s.push_str(": shut down the VM or hot-unplug the device first, then retry");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_pci_parent_says_how_to_bind_it() {
        assert!(is_pci_address("0000:00:04.0"));
        assert!(is_pci_address("0000:3b:1f.7"));
        for n in [
            "gvt-sim0",
            "0000:00:04.8",
            "0000:0g:04.0",
            "00:04.0",
            "0000:00:04.0x",
        ] {
            assert!(!is_pci_address(n), "{n}");
        }
        let e = Error::UnknownParent {
            name: "0000:00:04.0".into(),
            present: vec!["gvt-sim0".into()],
        };
        assert_eq!(
            e.to_string(),
            "mdev parent '0000:00:04.0' not found; parents present: gvt-sim0; to make the PCI \
             function 0000:00:04.0 a gvt_rs parent: echo gvt_rs > \
             /sys/bus/pci/devices/0000:00:04.0/driver_override; echo 0000:00:04.0 > \
             /sys/bus/pci/drivers_probe"
        );
        let e = Error::UnknownParent {
            name: "gvt-sim1".into(),
            present: vec!["gvt-sim0".into()],
        };
        assert_eq!(
            e.to_string(),
            "mdev parent 'gvt-sim1' not found; parents present: gvt-sim0"
        );
    }
}
