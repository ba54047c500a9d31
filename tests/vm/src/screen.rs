//! The vGPU's screen as an unmodified nested QEMU 10 shows it: a child QEMU
//! whose output lines the test reads, a QMP session (`screendump` as PPM or
//! PNG), and [`NestedDisplay`], the whole L2 display run (the `l2-display`
//! program draws [`crate::frame_blits`] with the blitter and flips on
//! command).  Shared by the display tests and the demo.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::Mdev;

/// A child QEMU whose output lines arrive on a channel; killed when dropped.
pub struct Qemu {
    pub child: Child,
    lines: Receiver<String>,
    /// Every line waited through so far.
    pub log: Vec<String>,
    /// Print the lines as they arrive (the tests do; the demo prints its own).
    pub echo: bool,
}

impl Qemu {
    pub fn spawn(args: &[String]) -> Qemu {
        let mut child = Command::new(&args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn qemu-system-x86_64");
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for r in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines() {
                    let Ok(l) = l else { break };
                    if tx.send(l.replace('\r', "")).is_err() {
                        break;
                    }
                }
            });
        }
        Qemu {
            child,
            lines: rx,
            log: Vec::new(),
            echo: true,
        }
    }

    /// Wait for a line containing `marker` (a deadline, not a timed assertion:
    /// a hung nested guest must fail the test rather than hang the rig).
    /// Panics on an `L2: display error` / `FAILED` line.
    pub fn wait_for(&mut self, marker: &str, limit: Duration) -> String {
        self.try_wait_for(marker, limit)
            .unwrap_or_else(|e| panic!("{e}:\n{}", self.log.join("\n")))
    }

    /// [`Qemu::wait_for`] that returns why it found no such line (the
    /// deadline passed, or QEMU's output ended) instead of panicking.
    pub fn try_wait_for(&mut self, marker: &str, limit: Duration) -> Result<String, String> {
        let t0 = Instant::now();
        loop {
            let left = limit.checked_sub(t0.elapsed()).unwrap_or_default();
            match self.try_wait_for_line(left) {
                Ok(l) => {
                    if l.contains(marker) {
                        return Ok(l);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("no {marker:?} from the nested guest in {limit:?}"))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("QEMU's output ended before {marker:?}"))
                }
            }
        }
    }

    /// [`Qemu::wait_for`] that also fails once the nested guest prints
    /// nothing for `silence`: a long run that reports its progress (IGT's
    /// runner) and goes quiet is hung, and fails then rather than at `limit`.
    pub fn wait_for_talking(&mut self, marker: &str, limit: Duration, silence: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let left = limit.checked_sub(t0.elapsed()).unwrap_or_default();
            // Each line restarts the silence; the whole wait keeps `limit`.
            let why = match self.try_wait_for_line(left.min(silence)) {
                Ok(l) if l.contains(marker) => return l,
                Ok(_) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if left <= silence => {
                    format!("no {marker:?} from the nested guest in {limit:?}")
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => format!(
                    "the nested guest printed nothing for {silence:?} while running toward {marker:?} (hung)"
                ),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    format!("QEMU's output ended before {marker:?}")
                }
            };
            panic!("{why}:\n{}", self.log.join("\n"));
        }
    }

    /// The next line, echoed and logged as [`Qemu::try_wait_for`] does.
    fn try_wait_for_line(
        &mut self,
        d: Duration,
    ) -> Result<String, std::sync::mpsc::RecvTimeoutError> {
        let l = self.lines.recv_timeout(d)?;
        if self.echo {
            println!("{l}");
        }
        self.log.push(l.clone());
        if l.contains("L2: display error") || l.contains("L2: display FAILED") {
            panic!("the L2 program failed: {l}\n{}", self.log.join("\n"));
        }
        Ok(l)
    }

    /// The lines that arrive within `d` (kept in the log too).
    pub fn lines_within(&mut self, d: Duration) -> Vec<String> {
        let t0 = Instant::now();
        let mut v = Vec::new();
        while let Some(left) = d.checked_sub(t0.elapsed()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if self.echo {
                        println!("{l}");
                    }
                    self.log.push(l.clone());
                    v.push(l);
                }
                Err(_) => break,
            }
        }
        v
    }
}

impl Drop for Qemu {
    /// Stop QEMU and show what it printed that nobody waited for (the
    /// reason of a failure, usually).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            println!("qemu: {l}");
        }
    }
}

/// Connect to a QEMU server socket, waiting for QEMU to create it.
pub fn connect(path: &str) -> UnixStream {
    for _ in 0..600 {
        if let Ok(s) = UnixStream::connect(path) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("QEMU never listened on {path}");
}

/// A decoded binary PPM (`P6`, maxval 255): what QMP `screendump` writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ppm {
    pub width: u32,
    pub height: u32,
    /// `width * height` RGB triples, row-major.
    pub rgb: Vec<u8>,
}

impl Ppm {
    /// Parse "P6 <w> <h> 255" (whitespace separated) and the RGB bytes.
    pub fn parse(data: &[u8]) -> Result<Ppm, String> {
        let mut fields = Vec::new();
        let mut at = 0;
        while fields.len() < 4 {
            while data
                .get(at)
                .ok_or("truncated PPM header")?
                .is_ascii_whitespace()
            {
                at += 1;
            }
            let start = at;
            while !data
                .get(at)
                .ok_or("truncated PPM header")?
                .is_ascii_whitespace()
            {
                at += 1;
            }
            fields.push(String::from_utf8_lossy(&data[start..at]).into_owned());
        }
        at += 1;
        if fields[0] != "P6" || fields[3] != "255" {
            return Err(format!("PPM header {fields:?}"));
        }
        let (width, height): (u32, u32) = match (fields[1].parse(), fields[2].parse()) {
            (Ok(w), Ok(h)) => (w, h),
            _ => return Err(format!("PPM size {fields:?}")),
        };
        let rgb = data[at.min(data.len())..].to_vec();
        if rgb.len() != width as usize * height as usize * 3 {
            return Err(format!(
                "{width}x{height} PPM with {} bytes of pixels",
                rgb.len()
            ));
        }
        Ok(Ppm { width, height, rgb })
    }

    /// Compare with `want` (XRGB8888, row-major, `w × h`) exactly; the
    /// first mismatch, if any, named.
    pub fn compare(&self, want: &[u32], w: u32, h: u32) -> Result<(), String> {
        if (self.width, self.height) != (w, h) {
            return Err(format!(
                "screen is {}x{}, expected {w}x{h}",
                self.width, self.height
            ));
        }
        for (i, p) in want.iter().enumerate() {
            let rgb = [(p >> 16) as u8, (p >> 8) as u8, *p as u8];
            if self.rgb[3 * i..3 * i + 3] != rgb {
                let (x, y) = (i as u32 % w, i as u32 / w);
                return Err(format!(
                    "pixel ({x}, {y}) is {:02x?}, expected {rgb:02x?}",
                    &self.rgb[3 * i..3 * i + 3]
                ));
            }
        }
        Ok(())
    }
}

/// A QMP session (one JSON object per line).
pub struct Qmp {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Qmp {
    /// QMP `migrate` to `uri`, then `query-migrate` until it ends
    /// (`completed`, `failed` or `cancelled`; panics after `deadline`):
    /// that status and the last answer (downtime, total time, ...).
    pub fn migrate(&mut self, uri: &str, deadline: Duration) -> (String, serde_json::Value) {
        self.cmd(serde_json::json!({"execute": "migrate", "arguments": {"uri": uri}}));
        let t0 = Instant::now();
        loop {
            let r = self.cmd(serde_json::json!({"execute": "query-migrate"}));
            let st = r.get("status").and_then(|v| v.as_str()).unwrap_or("");
            if matches!(st, "completed" | "failed" | "cancelled") {
                return (st.to_string(), r);
            }
            assert!(t0.elapsed() < deadline, "the migration did not end: {r}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `query-status` until the VM runs (an incoming migration's target
    /// once it took over); panics after `deadline`.
    pub fn wait_running(&mut self, deadline: Duration) {
        let t0 = Instant::now();
        loop {
            let st = self.cmd(serde_json::json!({"execute": "query-status"}));
            if st.get("status").and_then(|v| v.as_str()) == Some("running") {
                return;
            }
            assert!(t0.elapsed() < deadline, "the VM never ran: {st}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn new(path: &str) -> Qmp {
        let s = connect(path);
        let mut q = Qmp {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        };
        let greeting = q.line();
        assert!(greeting.get("QMP").is_some(), "QMP greeting: {greeting}");
        q.cmd(serde_json::json!({"execute": "qmp_capabilities"}));
        q
    }

    fn line(&mut self) -> serde_json::Value {
        let mut l = String::new();
        assert!(
            self.r.read_line(&mut l).expect("QMP read") > 0,
            "QMP closed"
        );
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("QMP sent {l:?}: {e}"))
    }

    /// Run a command; its `return` value (events in between are skipped).
    pub fn cmd(&mut self, c: serde_json::Value) -> serde_json::Value {
        writeln!(self.w, "{c}").expect("QMP write");
        loop {
            let v = self.line();
            if let Some(r) = v.get("return") {
                return r.clone();
            }
            if let Some(e) = v.get("error") {
                panic!("QMP {c} failed: {e}");
            }
        }
    }

    /// `screendump` of `device`'s console into `path` in `format` ("ppm"
    /// or "png"); the file's bytes.
    pub fn screendump_as(&mut self, device: &str, path: &str, format: &str) -> Vec<u8> {
        let _ = fs::remove_file(path);
        self.cmd(serde_json::json!({"execute": "screendump", "arguments": {"filename": path, "device": device, "format": format}}));
        let data = fs::read(path).unwrap_or_else(|e| panic!("screendump file {path}: {e}"));
        let _ = fs::remove_file(path);
        data
    }

    /// `screendump` (PPM) of `device`'s console, decoded.
    pub fn screendump(&mut self, device: &str, path: &str) -> Ppm {
        Ppm::parse(&self.screendump_as(device, path, "ppm"))
            .unwrap_or_else(|e| panic!("screendump: {e}"))
    }
}

/// Standard base64 (RFC 4648, with padding) of `data`.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Print `data` on the console for the host to save as `name`: a
/// `GVT-RIG: file-begin NAME BYTES` line, base64 in 76-character lines, a
/// `GVT-RIG: file-end NAME` line.  tools/vm-run.sh decodes it into
/// `$GVT_VM_FILES` (default `$GVT_VM_DIR/files`) and checks the size.
pub fn export_file(name: &str, data: &[u8]) {
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "file name {name:?}"
    );
    let b = base64(data);
    let mut out = std::io::stdout().lock();
    writeln!(out, "GVT-RIG: file-begin {name} {}", data.len()).unwrap();
    for l in b.as_bytes().chunks(76) {
        out.write_all(l).unwrap();
        out.write_all(b"\n").unwrap();
    }
    writeln!(out, "GVT-RIG: file-end {name}").unwrap();
    out.flush().unwrap();
}

/// Deadline for each step of the nested display run (boot under TCG-in-TCG
/// takes most of it).
pub const STEP: Duration = Duration::from_secs(400);

/// QEMU's name for the vGPU device in a [`NestedDisplay`].
pub const DEVICE_ID: &str = "vgpu0";

/// An unmodified nested QEMU 10 running the `l2-display` program with the
/// vGPU `m` as `-device vfio-pci,id=vgpu0,sysfsdev=...,display=on`, a QMP
/// socket and a second serial port for commands.  QEMU is killed when this
/// is dropped.
pub struct NestedDisplay {
    pub q: Qemu,
    pub qmp: Qmp,
    tty: UnixStream,
    shot: String,
    /// The mode the L2 program read from its EDID page.
    pub width: u32,
    pub height: u32,
}

impl NestedDisplay {
    /// Boot L2 under `accel` and wait until it shows frame 1 (drawn with
    /// blits, plane programmed, `display_ready` set).  dma-buf planes are
    /// turned off for the vGPU whatever the driver's default: QEMU takes them
    /// whenever offered, and they need an OpenGL display.
    pub fn start(m: &Mdev, accel: &str, echo: bool) -> NestedDisplay {
        fs::write(m.sysfs_path().join("gvt/dmabuf"), "0").expect("gvt/dmabuf");
        NestedDisplay::start_device(m, accel, echo, "vfio-pci", "")
    }

    /// [`NestedDisplay::start`] with the vGPU as it is (`gvt/dmabuf`
    /// untouched) on QEMU's device `driver` (`vfio-pci`, or
    /// `vfio-pci-nohotplug`, which libvirt uses for `ramfb='on'`) with
    /// `extra` device options (e.g. `,ramfb=on`).
    pub fn start_device(
        m: &Mdev,
        accel: &str,
        echo: bool,
        driver: &str,
        extra: &str,
    ) -> NestedDisplay {
        let mut q = Qemu::spawn(&Self::command(m, accel, driver, extra));
        q.echo = echo;
        let pid = std::process::id();
        let (qmp_path, tty_path) = Self::sockets(pid);
        let qmp = Qmp::new(&qmp_path);
        let tty = connect(&tty_path);
        let edid = q.wait_for("L2: display edid ", STEP);
        let mode = edid.split("L2: display edid ").nth(1).unwrap_or("").trim();
        let (width, height) = mode
            .split_once('x')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .unwrap_or_else(|| panic!("L2 mode line {edid:?}"));
        q.wait_for("L2: display A ", STEP);
        NestedDisplay {
            q,
            qmp,
            tty,
            shot: format!("/tmp/gvt-shot-{pid}"),
            width,
            height,
        }
    }

    fn sockets(pid: u32) -> (String, String) {
        (
            format!("/tmp/gvt-qmp-{pid}.sock"),
            format!("/tmp/gvt-tty-{pid}.sock"),
        )
    }

    /// The nested QEMU's command line (what [`NestedDisplay::start_device`]
    /// runs).
    pub fn command(m: &Mdev, accel: &str, driver: &str, extra: &str) -> Vec<String> {
        let (qmp_path, tty_path) = Self::sockets(std::process::id());
        let mut args = crate::l2_qemu_command_accel(accel, "display");
        let dev = format!(
            "{driver},id={DEVICE_ID},sysfsdev={},display=on{extra}",
            m.sysfs_path().display()
        );
        for a in [
            "-device",
            &dev,
            "-qmp",
            &format!("unix:{qmp_path},server=on,wait=off"),
        ] {
            args.push(a.to_string());
        }
        args.extend([
            "-serial".to_string(),
            format!("unix:{tty_path},server=on,wait=off"),
        ]);
        args
    }

    /// QMP `screendump` (PPM) of the vGPU's console.
    pub fn screendump(&mut self) -> Ppm {
        let p = format!("{}.ppm", self.shot);
        self.qmp.screendump(DEVICE_ID, &p)
    }

    /// QMP `screendump` of the vGPU's console as a PNG file's bytes.
    pub fn screendump_png(&mut self) -> Vec<u8> {
        let p = format!("{}.png", self.shot);
        self.qmp.screendump_as(DEVICE_ID, &p, "png")
    }

    /// Tell L2 to draw frame 2 and flip to it; returns its `L2: display B` line.
    pub fn flip(&mut self) -> String {
        writeln!(self.tty, "flip").unwrap();
        self.q.wait_for("L2: display B", STEP)
    }

    /// Tell L2 to exit and wait for QEMU to power off; panics unless it
    /// exits cleanly.
    pub fn finish(mut self) {
        writeln!(self.tty, "done").unwrap();
        self.q.wait_for("L2: display ok", STEP);
        self.q.wait_for("L2: done", STEP);
        let st = self.q.child.wait().expect("qemu exit");
        // What L2 printed while powering off belongs to the log, not the output.
        while let Ok(l) = self.q.lines.recv_timeout(Duration::from_secs(2)) {
            self.q.log.push(l);
        }
        assert!(
            st.success(),
            "QEMU exit status {st}:\n{}",
            self.q.log.join("\n")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(&[0xFF, 0xEF, 0xBE]), "/+++");
    }

    #[test]
    fn ppm_parse_and_compare() {
        let mut data = b"P6\n2 1\n255\n".to_vec();
        data.extend([1, 2, 3, 4, 5, 6]);
        let p = Ppm::parse(&data).unwrap();
        assert_eq!((p.width, p.height), (2, 1));
        assert_eq!(p.compare(&[0xFF01_0203, 0x0004_0506], 2, 1), Ok(()));
        assert!(p
            .compare(&[0xFF01_0203, 0x0004_0507], 2, 1)
            .unwrap_err()
            .contains("pixel (1, 0)"));
        assert!(p.compare(&[0; 2], 1, 2).is_err());
        assert!(Ppm::parse(&data[..data.len() - 1]).is_err());
        assert!(Ppm::parse(b"P5\n1 1\n255\n\0").is_err());
        assert!(Ppm::parse(b"P6\n1").is_err());
    }
}
