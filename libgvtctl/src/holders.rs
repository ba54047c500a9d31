//! Who holds a vGPU: processes with its VFIO node open, found by scanning
//! `<root>/proc/*/fd/*` for links to `/dev/vfio/<group>` (the legacy group node) or
//! `/dev/vfio/devices/vfioN` (the iommufd cdev).

use crate::sysfs::Sysfs;
use serde::Serialize;
use std::path::Path;

/// A process holding a VFIO node open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: u32,
    /// `/proc/<pid>/comm`, or `?` when unreadable.
    pub command: String,
    /// The node it holds (`/dev/vfio/12`).
    pub node: String,
}

/// Result of a scan: holders found, and whether some processes could not be inspected.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub holders: Vec<Holder>,
    pub incomplete: bool,
}

impl Scan {
    /// `Some(true)` held, `Some(false)` free, `None` unknown (nothing found, scan incomplete).
    pub fn in_use(&self) -> Option<bool> {
        if !self.holders.is_empty() {
            Some(true)
        } else if self.incomplete {
            None
        } else {
            Some(false)
        }
    }
}

/// Scan for processes holding any of `nodes` (absolute paths as the host sees them).
pub fn scan(fs: &dyn Sysfs, root: &Path, nodes: &[String]) -> Scan {
    let mut out = Scan::default();
    if nodes.is_empty() {
        return out;
    }
    let proc_dir = root.join("proc");
    let Ok(pids) = fs.read_dir(&proc_dir) else {
        out.incomplete = true;
        return out;
    };
    for name in pids {
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        let pdir = proc_dir.join(&name);
        let fds = match fs.read_dir(&pdir.join("fd")) {
            Ok(f) => f,
            Err(e) => {
                // Processes that exit during the scan are fine; EACCES means we cannot tell.
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    out.incomplete = true;
                }
                continue;
            }
        };
        for fd in fds {
            let Ok(target) = fs.read_link(&pdir.join("fd").join(&fd)) else {
                continue;
            };
            let target = target.to_string_lossy().into_owned();
            if nodes.contains(&target) {
                let command = fs
                    .read_to_string(&pdir.join("comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_else(|_| "?".to_string());
                if !out.holders.iter().any(|h| h.pid == pid && h.node == target) {
                    out.holders.push(Holder {
                        pid,
                        command,
                        node: target,
                    });
                }
            }
        }
    }
    out.holders
        .sort_by(|a, b| (a.pid, &a.node).cmp(&(b.pid, &b.node)));
    out
}
