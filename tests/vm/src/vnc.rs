//! The one thing a VNC viewer does that the tests need: ask QEMU for another
//! screen size (RFB's `SetDesktopSize`, the ExtendedDesktopSize extension,
//! which QEMU's VNC server forwards to the display as new UI info).  For a
//! `vfio-pci,display=on` device with an EDID region, QEMU then writes a new
//! EDID with that size as its preferred mode through the region (vfio.h's
//! link down, blob, link up): a monitor hotplug as a user resizing their
//! viewer window makes it (tests/vm/tests/gvt_drm.rs).
//!
//! RFB 3.8 (RFC 6143) with security type None over QEMU's `-vnc unix:PATH`;
//! every server message is checked, none is trusted for sizes beyond what
//! its fields allow.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// RFB's pseudo-encoding for ExtendedDesktopSize.
const EXT_DESKTOP_SIZE: i32 = -308;
/// Client message `SetDesktopSize`.
const SET_DESKTOP_SIZE: u8 = 251;

/// The ExtendedDesktopSize status QEMU sends back for a request it passed on
/// to the display ("request forwarded"); 3 is "invalid screen layout", what
/// it answers when the console cannot take UI info.
pub const FORWARDED: u16 = 4;

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn read_n<const N: usize>(s: &mut UnixStream) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    s.read_exact(&mut b)?;
    Ok(b)
}

fn skip(s: &mut UnixStream, n: usize) -> io::Result<()> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf)
}

/// A connected RFB session: the handshake done, ExtendedDesktopSize
/// announced.
pub struct Vnc {
    s: UnixStream,
    /// The framebuffer size in ServerInit.
    pub size: (u16, u16),
}

impl Vnc {
    /// Connect to QEMU's `-vnc unix:PATH` (waiting for it to listen) and
    /// run the handshake.
    pub fn connect(path: &str) -> io::Result<Vnc> {
        let mut s = crate::screen::connect(path);
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let version: [u8; 12] = read_n(&mut s)?;
        if !version.starts_with(b"RFB 003.") {
            return Err(bad(format!("not an RFB server: {version:?}")));
        }
        s.write_all(b"RFB 003.008\n")?;
        let [n] = read_n::<1>(&mut s)?;
        if n == 0 {
            return Err(bad("the server refused the connection"));
        }
        let mut types = vec![0u8; n as usize];
        s.read_exact(&mut types)?;
        if !types.contains(&1) {
            return Err(bad(format!("no security type None in {types:?}")));
        }
        s.write_all(&[1])?;
        let result = u32::from_be_bytes(read_n(&mut s)?);
        if result != 0 {
            return Err(bad(format!("security result {result}")));
        }
        s.write_all(&[1])?; // ClientInit: shared
        let init: [u8; 24] = read_n(&mut s)?;
        let size = (
            u16::from_be_bytes([init[0], init[1]]),
            u16::from_be_bytes([init[2], init[3]]),
        );
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
        if name_len > 4096 {
            return Err(bad(format!("desktop name of {name_len} bytes")));
        }
        skip(&mut s, name_len as usize)?;
        // SetEncodings: raw, ExtendedDesktopSize.
        let mut m = vec![2u8, 0, 0, 2];
        m.extend_from_slice(&0i32.to_be_bytes());
        m.extend_from_slice(&EXT_DESKTOP_SIZE.to_be_bytes());
        s.write_all(&m)?;
        Ok(Vnc { s, size })
    }

    /// Ask for a `w`×`h` screen (one screen at 0,0); the status of QEMU's
    /// ExtendedDesktopSize answer (4: forwarded to the display).
    pub fn set_desktop_size(&mut self, w: u16, h: u16) -> io::Result<u16> {
        let mut m = vec![SET_DESKTOP_SIZE, 0];
        m.extend_from_slice(&w.to_be_bytes());
        m.extend_from_slice(&h.to_be_bytes());
        m.extend_from_slice(&[1, 0]); // one screen, padding
        m.extend_from_slice(&0u32.to_be_bytes()); // id
        m.extend_from_slice(&[0, 0, 0, 0]); // x, y
        m.extend_from_slice(&w.to_be_bytes());
        m.extend_from_slice(&h.to_be_bytes());
        m.extend_from_slice(&0u32.to_be_bytes()); // flags
        self.s.write_all(&m)?;
        // The answer: a FramebufferUpdate with an ExtendedDesktopSize
        // rectangle whose x is 1 (the change was this client's request)
        // and y the status.  (Other updates are not asked for: no
        // FramebufferUpdateRequest was sent.)
        for _ in 0..16 {
            let [kind] = read_n::<1>(&mut self.s)?;
            if kind != 0 {
                return Err(bad(format!("unexpected server message {kind}")));
            }
            let h: [u8; 3] = read_n(&mut self.s)?;
            let rects = u16::from_be_bytes([h[1], h[2]]);
            let mut status = None;
            for _ in 0..rects {
                let r: [u8; 12] = read_n(&mut self.s)?;
                let enc = i32::from_be_bytes([r[8], r[9], r[10], r[11]]);
                if enc != EXT_DESKTOP_SIZE {
                    return Err(bad(format!("unexpected rectangle encoding {enc}")));
                }
                let [screens, ..] = read_n::<4>(&mut self.s)?;
                skip(&mut self.s, 16 * screens as usize)?;
                let reason = u16::from_be_bytes([r[0], r[1]]);
                if reason == 1 {
                    status = Some(u16::from_be_bytes([r[2], r[3]]));
                }
            }
            if let Some(st) = status {
                return Ok(st);
            }
        }
        Err(bad("no answer to SetDesktopSize"))
    }
}
