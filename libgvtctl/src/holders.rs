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
//!
//! The `procfs` crate lists the processes and reads a holder's command line (for the VM
//! name it was given, [`vm_name`]). Three pieces stay hand-written, because `procfs`
//! cannot keep their properties: the descriptor comparison (`procfs` gives a
//! descriptor's link *text*, which is what the namespace trick forges; the comparison
//! needs `stat` through the magic link, done through [`Sysfs::file_id`]), the `O_PATH`
//! test (`procfs` does not parse the `flags:` line of `fdinfo`), and the process name
//! (`procfs` decodes `comm` into a `String`, replacing bytes that are not UTF-8, while
//! the escaping shows them as they are, `\xNN`).

use crate::escape::escape_bytes;
use crate::sysfs::{FileId, Sysfs};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A process holding a VFIO node open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Holder {
    pub pid: u32,
    /// `/proc/<pid>/comm`, escaped ([`crate::escape::escape_bytes`]: control characters,
    /// invisible format characters and bytes that are not UTF-8 as `\xNN`/`\u{NNNN}`,
    /// `\` as `\\`), or `?` when unreadable. Its owner chooses it.
    pub command: String,
    /// The node it holds (`/dev/vfio/12`), as this host names it.
    pub node: String,
    /// The VM's name from its command line (QEMU's `-name NAME` or
    /// `-name guest=NAME,...`, as libvirt passes it), escaped; `None` when it has none.
    pub vm_name: Option<String>,
}

/// The VM name in a VMM's command line: QEMU's `-name` (`-name vm1`,
/// `-name guest=vm1,debug-threads=on`, also `--name` and `-name=vm1`). Its owner
/// chooses it: the result is escaped.
pub fn vm_name(cmdline: &[String]) -> Option<String> {
    let mut args = cmdline.iter().skip(1);
    while let Some(a) = args.next() {
        let value = match a.as_str() {
            "-name" | "--name" => args.next()?.clone(),
            _ => match a
                .strip_prefix("-name=")
                .or_else(|| a.strip_prefix("--name="))
            {
                Some(v) => v.to_string(),
                None => continue,
            },
        };
        // QEMU's option syntax: `guest=NAME,...` or `NAME,...`; `,,` is a literal comma.
        let mut name = String::new();
        let mut chars = value.chars().peekable();
        while let Some(c) = chars.next() {
            if c == ',' {
                if chars.peek() == Some(&',') {
                    chars.next();
                } else {
                    break;
                }
            }
            name.push(c);
        }
        let name = name.strip_prefix("guest=").unwrap_or(&name).to_string();
        return (!name.is_empty()).then(|| crate::escape::escape(&name).into_owned());
    }
    None
}

/// The VM name of process `pid` (its command line through `procfs`).
fn vm_name_of(proc_dir: &Path, pid: u32) -> Option<String> {
    let p = procfs::process::Process::new_with_root(proc_dir.join(pid.to_string())).ok()?;
    vm_name(&p.cmdline().ok()?)
}

/// A process that may hold a VFIO node, which could not be verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
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
    let Ok(procs) = procfs::process::all_processes_with_root(&proc_dir) else {
        out.incomplete = true;
        return out;
    };
    // Numeric entries only (`procfs` skips the rest); one that vanished is skipped later.
    let mut pids: Vec<u32> = procs
        .filter_map(|p| p.ok())
        .filter_map(|p| u32::try_from(p.pid()).ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let pdir = proc_dir.join(pid.to_string());
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
                                vm_name: vm_name_of(&proc_dir, pid),
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
    fn vm_names_from_command_lines() {
        let v = |a: &[&str]| vm_name(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            v(&["qemu", "-m", "1G", "-name", "vm1"]).as_deref(),
            Some("vm1")
        );
        assert_eq!(
            v(&["qemu", "-name", "guest=web,debug-threads=on", "-S"]).as_deref(),
            Some("web")
        );
        assert_eq!(
            v(&["qemu", "-name", "a,,b,process=x"]).as_deref(),
            Some("a,b")
        );
        assert_eq!(v(&["qemu", "--name=db"]).as_deref(), Some("db"));
        assert_eq!(
            v(&["qemu", "-name", "evil\x1b[2J"]).as_deref(),
            Some("evil\\x1b[2J")
        );
        assert_eq!(v(&["qemu", "-name", "a\\b"]).as_deref(), Some("a\\\\b"));
        assert_eq!(v(&["-name", "first-arg-is-the-program"]), None);
        assert_eq!(v(&["qemu", "-name"]), None);
        assert_eq!(v(&["qemu", "-name", ""]), None);
        assert_eq!(v(&["cloud-hypervisor", "--api-socket", "x"]), None);
        assert_eq!(v(&[]), None);
    }

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
