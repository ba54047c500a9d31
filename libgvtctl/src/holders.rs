//! Who holds a vGPU: processes with its VFIO node open (`/dev/vfio/<group>`, the legacy
//! group node, or `/dev/vfio/devices/vfioN`, the iommufd cdev).
//!
//! Nothing another user controls decides the answer. The text of a `/proc/<pid>/fd/<n>`
//! link is the path *in that process's mount namespace*: any user can make an
//! unprivileged user + mount namespace with a tmpfs on `/dev`, open a file of its own
//! called `/dev/vfio/0` there, and the link reads `/dev/vfio/0`. So each descriptor is
//! compared with the real node by what it *is*: `stat` through the magic link reaches
//! the open file itself, and a device node is the same device when its type and
//! `st_rdev` match (in whatever namespace, through whatever name: libvirt gives each
//! QEMU a private `/dev`, so a different mount namespace does not mean a different
//! device); any other node must be the same inode. A descriptor opened with `O_PATH`
//! names the node without opening the device (any user can do that, even with no
//! access to the node), so it does not count (`/proc/<pid>/fdinfo/<n>` says which).
//! Where the comparison cannot be made (the node is missing here, the `fdinfo` is
//! unreadable), the process is reported as a [`PossibleHolder`] with the reason, not as
//! a holder: gvtctl says it is unsure instead of refusing on evidence it cannot check.
//! Process names are escaped ([`crate::escape`]) when read.

use crate::escape::escape_bytes;
use crate::sysfs::{FileId, Sysfs};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A process holding a VFIO node open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: u32,
    /// `/proc/<pid>/comm`, escaped ([`crate::escape::escape_bytes`]: control characters,
    /// invisible format characters and bytes that are not UTF-8 as `\xNN`/`\u{NNNN}`,
    /// `\` as `\\`), or `?` when unreadable. Its owner chooses it.
    pub command: String,
    /// The node it holds (`/dev/vfio/12`), as this host names it.
    pub node: String,
}

/// A process that may hold a VFIO node, which could not be verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PossibleHolder {
    pub pid: u32,
    /// Escaped as in [`Holder::command`].
    pub command: String,
    pub node: String,
    /// Why it could not be verified.
    pub reason: String,
}

impl std::fmt::Display for PossibleHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pid {}) may hold {}, which could not be verified: {}",
            self.command, self.pid, self.node, self.reason
        )
    }
}

/// Result of a scan: holders found, processes that may hold a node, and whether some
/// processes could not be inspected.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub holders: Vec<Holder>,
    pub possible: Vec<PossibleHolder>,
    pub incomplete: bool,
}

impl Scan {
    /// Of the holders of `nodes`: `Some(true)` held, `Some(false)` free, `None` unknown
    /// (nothing verified, but the scan was incomplete or found a possible holder).
    pub fn in_use(&self, nodes: &[String]) -> Option<bool> {
        if self.holders.iter().any(|h| nodes.contains(&h.node)) {
            Some(true)
        } else if self.incomplete || self.possible.iter().any(|h| nodes.contains(&h.node)) {
            None
        } else {
            Some(false)
        }
    }
}

/// `O_PATH` in the octal `flags:` line of `/proc/<pid>/fdinfo/<n>`.
fn fdinfo_is_o_path(fdinfo: &str) -> Option<bool> {
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| i64::from_str_radix(v.trim(), 8).ok())?;
    Some(flags & i64::from(libc::O_PATH) != 0)
}

/// `node` (an absolute host path) under `root`.
fn rooted(root: &Path, node: &str) -> PathBuf {
    root.join(node.trim_start_matches('/'))
}

/// Scan for processes holding any of `nodes` (absolute paths as the host sees them).
pub fn scan(fs: &dyn Sysfs, root: &Path, nodes: &[String]) -> Scan {
    let mut out = Scan::default();
    if nodes.is_empty() {
        return out;
    }
    // The nodes as they are in this mount namespace (what root's `/dev` holds).
    let real: Vec<(&String, Result<FileId, String>)> = nodes
        .iter()
        .map(|n| (n, fs.file_id(&rooted(root, n)).map_err(|e| e.to_string())))
        .collect();
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
        let command = || {
            fs.read_bytes(&pdir.join("comm"))
                .map(|c| escape_bytes(c.strip_suffix(b"\n").unwrap_or(&c)))
                .unwrap_or_else(|_| "?".to_string())
        };
        for fd in fds {
            let link = pdir.join("fd").join(&fd);
            // Closed meanwhile, or it leads to something that cannot be examined (a FUSE
            // file of another user answers even root with EACCES: no VFIO node does).
            let open_file = fs.file_id(&link);
            for (node, id) in &real {
                let possible = |reason: String| PossibleHolder {
                    pid,
                    command: command(),
                    node: (*node).clone(),
                    reason,
                };
                let text_names_node = || {
                    fs.read_link(&link)
                        .ok()
                        .is_some_and(|t| t == Path::new(node.as_str()) || t == rooted(root, node))
                };
                match (id, &open_file) {
                    (Ok(_), Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
                        if text_names_node() {
                            out.possible.push(possible(format!(
                                "descriptor {fd} is named {node}, but what it leads to \
                                     cannot be examined ({e})"
                            )));
                        }
                    }
                    (Ok(_), Err(_)) => {}
                    (Ok(id), Ok(f)) => {
                        if !f.is_same_as(id) {
                            continue;
                        }
                        let info = pdir.join("fdinfo").join(&fd);
                        match fs.read_to_string(&info).map(|t| fdinfo_is_o_path(&t)) {
                            // An O_PATH descriptor: the node is named, the device not opened.
                            Ok(Some(true)) => {}
                            Ok(Some(false)) => out.holders.push(Holder {
                                pid,
                                command: command(),
                                node: (*node).clone(),
                            }),
                            // Closed, or the process is gone: it holds nothing now.
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            r => out.possible.push(possible(format!(
                                "descriptor {fd} leads to it, but {} {}, so whether the device \
                                     is open or only named (O_PATH) is unknown",
                                info.display(),
                                match r {
                                    Err(e) => format!("is unreadable ({e})"),
                                    Ok(_) => "has no flags line".to_string(),
                                }
                            ))),
                        }
                    }
                    (Err(why), _) => {
                        // The node cannot be examined here: all there is to go on is the
                        // link text, which its owner can forge.
                        if text_names_node() {
                            out.possible.push(possible(format!(
                                "descriptor {fd} is named {node}, but that node cannot be \
                                     examined here ({why}) to compare it with the open file"
                            )));
                        }
                    }
                }
            }
        }
    }
    // One entry per (pid, node), however many descriptors; a verified holder is not
    // also a possible one.
    out.holders.sort_by_key(|h| (h.pid, h.node.clone()));
    out.holders
        .dedup_by(|a, b| (a.pid, &a.node) == (b.pid, &b.node));
    out.possible.sort_by_key(|h| (h.pid, h.node.clone()));
    out.possible
        .dedup_by(|a, b| (a.pid, &a.node) == (b.pid, &b.node));
    let held = &out.holders;
    out.possible
        .retain(|p| !held.iter().any(|h| (h.pid, &h.node) == (p.pid, &p.node)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_flags() {
        assert_eq!(
            fdinfo_is_o_path("pos:\t0\nflags:\t02100002\nmnt_id:\t24\n"),
            Some(false)
        );
        let o_path = format!(
            "pos:\t0\nflags:\t0{:o}\nmnt_id:\t24\n",
            libc::O_PATH | libc::O_CLOEXEC
        );
        assert_eq!(fdinfo_is_o_path(&o_path), Some(true));
        assert_eq!(fdinfo_is_o_path("pos:\t0\n"), None);
        assert_eq!(fdinfo_is_o_path("flags:\tzz\n"), None);
    }
}
