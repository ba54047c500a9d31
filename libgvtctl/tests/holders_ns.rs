//! Holder detection against the real `/proc` and real processes (issue 19, finding 3):
//! a user in an unprivileged user + mount namespace with a tmpfs on `/dev` opens a file
//! of its own called `/dev/vfio/0`; its `/proc/<pid>/fd/3` reads `/dev/vfio/0`, exactly
//! the node's name, but it holds nothing of ours. A process that opened the node (by
//! any name) holds it; an `O_PATH` descriptor of the node does not.
//!
//! The tree is a temporary directory whose `proc` is the host's `/proc` and whose
//! `dev/vfio/0` is a file the test owns (and, where the test may `mknod`, whose
//! `dev/vfio/1` is a character device standing for `/dev/full`). It needs `unshare -Urm`
//! (user namespaces enabled); without it the test says why and checks nothing more.

use libgvtctl::holders;
use libgvtctl::RealSysfs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wait (bounded) until `pid`'s descriptor 3 exists and its link reads `text`.
fn fd3_reads(pid: u32, text: &str) -> bool {
    let link = format!("/proc/{pid}/fd/3");
    for _ in 0..1000 {
        if std::fs::read_link(&link).is_ok_and(|t| t == Path::new(text)) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// Whether a child of `pid` runs `comm` (waits up to 10 s): a shell's child
/// is the shell itself, with its command line, from its fork to its exec.
fn child_runs(pid: u32, comm: &str) -> bool {
    let ppid = format!("PPid:\t{pid}\n");
    for _ in 0..1000 {
        let found = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let p = e.path();
                std::fs::read_to_string(p.join("status")).is_ok_and(|s| s.contains(&ppid))
                    && std::fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim() == comm)
            });
        if found {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// A tree whose `proc` is the host's `/proc` and whose `dev/vfio/0` is a file of ours.
fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("dev/vfio")).unwrap();
    std::os::unix::fs::symlink("/proc", d.path().join("proc")).unwrap();
    let node = d.path().join("dev/vfio/0");
    std::fs::write(&node, "").unwrap();
    (d, node)
}

#[test]
fn a_file_in_another_users_namespace_is_not_the_node() {
    let probe = Command::new("unshare")
        .args(["-Urm", "sh", "-c", "mount -t tmpfs none /dev"])
        .stderr(Stdio::piped())
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "SKIPPED: unshare -Urm with a tmpfs on /dev is not available here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!("SKIPPED: cannot run unshare: {e}");
            return;
        }
    }
    let (d, node) = tree();
    let root = d.path();
    let mut kids = Kill(Vec::new());
    // The forger: its own /dev, its own /dev/vfio/0, held read-write on fd 3.
    let forger = Command::new("unshare")
        .args([
            "-Urm",
            "sh",
            "-c",
            "mount -t tmpfs none /dev && mkdir /dev/vfio && : > /dev/vfio/0 && : > /dev/vfio/1 \
             && exec sleep 300 3<>/dev/vfio/0 4<>/dev/vfio/1",
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let forger_pid = forger.id();
    kids.0.push(forger);
    // A real holder of the tree's node (by its tree path).
    let holder = Command::new("sh")
        .args(["-c", "exec sleep 300 3<>\"$0\"", &node.to_string_lossy()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let holder_pid = holder.id();
    kids.0.push(holder);
    assert!(
        fd3_reads(forger_pid, "/dev/vfio/0"),
        "the forger did not start"
    );
    assert!(
        fd3_reads(holder_pid, &node.to_string_lossy()),
        "the holder did not start"
    );
    // This process names the node with O_PATH (no access to the device needed).
    let _named = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&node)
        .unwrap();
    let me = std::process::id();

    let scan = holders::scan(&RealSysfs, root, &["/dev/vfio/0".to_string()]);
    let pids: Vec<u32> = scan.holders.iter().map(|h| h.pid).collect();
    assert!(
        !pids.contains(&forger_pid),
        "a file in another user's namespace, named /dev/vfio/0 there, counted as the node: {scan:?}"
    );
    assert!(
        pids.contains(&holder_pid),
        "the real holder was missed: {scan:?}"
    );
    assert!(
        !pids.contains(&me),
        "an O_PATH descriptor counted as holding: {scan:?}"
    );
    assert!(
        scan.possible.iter().all(|p| p.pid != forger_pid),
        "{scan:?}"
    );
    assert_eq!(scan.in_use(&["/dev/vfio/0".to_string()]), Some(true));

    // A device node is the device, through whatever name: /dev/vfio/1 here stands for
    // /dev/full (1:7); a process that opened /dev/full holds it, the forger's
    // /dev/vfio/1 (a file in its tmpfs, where it may not make device nodes) does not.
    let dev1 = root.join("dev/vfio/1");
    let made = std::process::Command::new("mknod")
        .arg(&dev1)
        .args(["c", "1", "7"])
        .output();
    if !made.as_ref().is_ok_and(|o| o.status.success()) {
        println!("SKIPPED (device-node part): cannot mknod here: {made:?}");
        return;
    }
    let full = Command::new("sh")
        .args(["-c", "exec sleep 300 3>/dev/full"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let full_pid = full.id();
    kids.0.push(full);
    assert!(
        fd3_reads(full_pid, "/dev/full"),
        "the /dev/full holder did not start"
    );
    let _named1 = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&dev1)
        .unwrap();
    let scan = holders::scan(&RealSysfs, root, &["/dev/vfio/1".to_string()]);
    let pids: Vec<u32> = scan.holders.iter().map(|h| h.pid).collect();
    assert!(pids.contains(&full_pid), "{scan:?}");
    assert!(!pids.contains(&forger_pid), "{scan:?}");
    assert!(!pids.contains(&me), "{scan:?}");
    assert!(scan.holders.iter().all(|h| h.node == "/dev/vfio/1"));
}

/// The holder's VM name comes from its real command line (`procfs`): QEMU as libvirt
/// starts it, `-name guest=NAME,debug-threads=on`. Here a shell holds the node on fd 3
/// with those words among its arguments; its child (`sleep`, no `-name`) inherits the
/// descriptor and holds it too, without a VM name.
#[test]
fn the_holders_vm_name_comes_from_its_command_line() {
    let (d, node) = tree();
    let root = d.path();
    let mut kids = Kill(Vec::new());
    let vmm = Command::new("sh")
        .args([
            "-c",
            "exec 3<>\"$0\"; sleep 300",
            &node.to_string_lossy(),
            "-name",
            "guest=web\u{1b}1,debug-threads=on",
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = vmm.id();
    kids.0.push(vmm);
    assert!(
        fd3_reads(pid, &node.to_string_lossy()),
        "the holder did not start"
    );
    // Until its child has become `sleep`, the child is a second `sh` with
    // the VMM's command line (seen once under load).
    assert!(child_runs(pid, "sleep"), "the holder's child did not start");
    let scan = holders::scan(&RealSysfs, root, &["/dev/vfio/0".to_string()]);
    let h = scan
        .holders
        .iter()
        .find(|h| h.pid == pid)
        .unwrap_or_else(|| panic!("{scan:?}"));
    assert_eq!(h.vm_name.as_deref(), Some("web\\x1b1"), "escaped: {scan:?}");
    assert!(
        scan.holders
            .iter()
            .filter(|h| h.pid != pid)
            .all(|h| h.vm_name.is_none()),
        "{scan:?}"
    );
}
