//! L2 program (runs inside the nested guest, `gvt.l2=display`): a minimal
//! vGPU-aware display driver on top of the reference guest driver
//! (`examples/guest-driver` over its sysfs backend).  It reads the monitor's
//! preferred mode from the vGPU's EDID page (what the VMM wrote through the
//! EDID region), backs two framebuffers in its aperture slice with its own
//! RAM through the GGTT, draws [`gvt_vmtests::frame_blits`] picture 1 into
//! the first with the blitter only (XY_COLOR_BLT fills, XY_SRC_COPY_BLT
//! copies, submitted on the BCS ring and audited by the mediator; the CPU
//! never writes a pixel), waits for the engine to retire them, programs the
//! primary plane and sets PVINFO `display_ready`.  It then waits for L1's
//! commands on the second serial port (`/dev/ttyS1`): `flip` draws picture 2
//! into the second framebuffer the same way and flips the plane to it,
//! `done` exits.  Prints `L2: display ...` lines the L1 side waits for.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::exit;
use std::time::Duration;

use gvt_guest_driver::driver::{user_irq, BCS, PAGE, RCS};
use gvt_guest_driver::gvt_core::cmd::encode::{color_blt, flush_dw_store, sdi, src_copy_blt};
use gvt_guest_driver::gvt_core::cmd::{Space, MI_USER_INTERRUPT};
use gvt_guest_driver::jobs::Ppgtt;
use gvt_guest_driver::sysfs::SysfsBackend;
use gvt_guest_driver::{Backend, BootConfig, Driver, Error, GuestBus, PteWidth, Result};
use gvt_vmtests::gvt::{
    DEIER, DEIIR, DEIMR, DSPACNTR, DSPASTRIDE, DSPASURF, FMT_XRGB8888, FRMCOUNT, PIPEASRC,
    PLANE_ENABLE,
};
use gvt_vmtests::{frame_blits, Blit};

const PVINFO: u64 = 0x78000;
const DISPLAY_READY: u64 = PVINFO + 0x804;
const EDID_STATUS: u64 = 0x79200;
const EDID_MODE: u64 = 0x7920C;
/// The guest driver's layout uses the first 0x60 pages of the aperture
/// slice (rings, batches, results); the framebuffers start at 1 MiB.
const FB_OFFSET: u64 = 1 << 20;
/// Most dwords per submission (the BCS ring is 4 pages).
const CHUNK_DWORDS: usize = 2048;
const T: Duration = Duration::from_secs(300);

type Dev = Driver<SysfsBackend>;

fn reg(d: &mut Dev, off: u64, v: u32) -> Result<()> {
    if d.bus_mut().bar0_write(off, &v.to_le_bytes()) {
        Ok(())
    } else {
        Err(Error::Refused {
            what: format!("BAR0 write {off:#x}"),
            detail: d.bus_mut().take_error().unwrap_or_default(),
        })
    }
}

fn rd(d: &mut Dev, off: u64) -> Result<u32> {
    let mut b = [0u8; 4];
    if d.bus_mut().bar0_read(off, &mut b) {
        Ok(u32::from_le_bytes(b))
    } else {
        Err(Error::Refused {
            what: format!("BAR0 read {off:#x}"),
            detail: d.bus_mut().take_error().unwrap_or_default(),
        })
    }
}

/// Seconds since boot (progress lines).
fn uptime() -> String {
    fs::read_to_string("/proc/uptime")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

/// A framebuffer: graphics address, pitch in bytes.
#[derive(Clone, Copy)]
struct Fb {
    gma: u64,
    pitch: u32,
}

/// The blitter command of one step of the picture.
fn command(fb: Fb, b: &Blit) -> Vec<u32> {
    match *b {
        Blit::Fill { x, y, w, h, color } => {
            color_blt(fb.gma, fb.pitch, (x, y, x + w, y + h), color).to_vec()
        }
        Blit::Copy { sx, sy, x, y, w, h } => src_copy_blt(
            fb.gma,
            fb.pitch,
            (x, y, x + w, y + h),
            fb.gma,
            fb.pitch,
            (sx, sy),
        )
        .to_vec(),
    }
}

/// Draw picture `frame` into `fb` with the blitter: the commands in ring
/// sized submissions, each waited for; the last one ends with a post-sync
/// marker store and a user interrupt.  Returns (commands, submissions).
fn draw(d: &mut Dev, fb: Fb, frame: u32, w: u32, h: u32) -> Result<(usize, usize)> {
    let blits = frame_blits(frame, w, h);
    let marker_at = d.layout().results() + 0x10020;
    let marker = 0xF100_0000 | frame;
    let mut chunks: Vec<Vec<u32>> = vec![Vec::new()];
    for b in &blits {
        let c = command(fb, b);
        if chunks
            .last()
            .is_some_and(|l| l.len() + c.len() > CHUNK_DWORDS)
        {
            chunks.push(Vec::new());
        }
        chunks.last_mut().unwrap().extend(c);
    }
    let last = chunks.len() - 1;
    chunks[last].extend(flush_dw_store(Space::Ggtt, marker_at, marker, false));
    chunks[last].push(MI_USER_INTERRUPT);
    for c in &chunks {
        d.submit(BCS, c)?;
        d.wait_idle(BCS, T)?;
    }
    d.wait_all(user_irq(BCS), T)?;
    d.ack(user_irq(BCS))?;
    let got = d.read(marker_at)?;
    if got != marker {
        return Err(Error::Mismatch {
            what: "blitter post-sync marker".into(),
            at: marker_at,
            expected: marker,
            got,
        });
    }
    Ok((blits.len(), chunks.len()))
}

/// A store through the guest's PPGTT (render engine), checked in the data
/// page's RAM: the PPGTT's root and tables are the guest's own, so they
/// must work the same after a migration.
fn ppgtt_store(d: &mut Dev, p: &Ppgtt, value: u32) -> Result<()> {
    d.submit(RCS, &sdi(Space::Ppgtt, 0x80, value))?;
    d.wait_idle(RCS, T)?;
    let got = d.read_phys(p.data_gpa + 0x80)?;
    if got != value {
        return Err(Error::Mismatch {
            what: "PPGTT store".into(),
            at: p.data_gpa + 0x80,
            expected: value,
            got,
        });
    }
    Ok(())
}

/// Pipe A's vblank event: cleared in DEIIR, then latched again after a
/// while (unmasked in DEIMR, not enabled in DEIER: no interrupt reaches L2,
/// whose vGPU function has no kernel driver); and the frame counter.
fn vblank_latched(d: &mut Dev) -> Result<u32> {
    reg(d, DEIIR, 1)?;
    std::thread::sleep(Duration::from_millis(200));
    let count = rd(d, FRMCOUNT)?;
    if rd(d, DEIIR)? & 1 == 0 {
        return Err(Error::BadInput("no pipe A vblank latched in DEIIR".into()));
    }
    Ok(count)
}

fn run() -> Result<()> {
    let dir = SysfsBackend::find()?;
    // Probe with a small pool first to learn the mode, then size the RAM.
    let mut d = Driver::probe(SysfsBackend::open(&dir, 1)?)?;
    if rd(&mut d, EDID_STATUS)? & 1 == 0 {
        return Err(Error::BadInput("no monitor connected".into()));
    }
    let mode = rd(&mut d, EDID_MODE)?;
    let (w, h) = ((mode >> 16) + 1, (mode & 0xFFFF) + 1);
    println!("L2: display edid {w}x{h}");
    let pitch = (w * 4).div_ceil(64) * 64;
    let fb_pages = (u64::from(pitch) * u64::from(h)).div_ceil(PAGE);
    drop(d);

    let boot = BootConfig {
        aperture_pages: 0x60,
        high_pages: 0,
        width: PteWidth::Qword,
        verify_ptes: true,
    };
    // + the PPGTT's page directory, page table and data page.
    let ram = boot.aperture_pages + 2 * fb_pages + 8 + 3;
    let mut d = Driver::probe(SysfsBackend::open(&dir, ram as usize)?)?;
    let ap = d.aperture();
    let fbs = [0, 1].map(|i| Fb {
        gma: ap.base + FB_OFFSET + i * fb_pages * PAGE,
        pitch,
    });
    if !ap.contains(fbs[0].gma, 2 * fb_pages * PAGE) {
        return Err(Error::BadInput(format!(
            "two {w}x{h} framebuffers do not fit the aperture slice {ap:?}"
        )));
    }
    d.boot(boot)?;
    d.map(fbs[0].gma, 2 * fb_pages)?;
    println!(
        "L2: display vgt_id {} framebuffers {:#x} {:#x} ({} pages each) mapped at {}",
        d.vgt_id(),
        fbs[0].gma,
        fbs[1].gma,
        fb_pages,
        uptime()
    );

    let (n, subs) = draw(&mut d, fbs[0], 1, w, h)?;
    println!(
        "L2: display drew frame 1: {n} blits in {subs} submissions at {}",
        uptime()
    );
    reg(&mut d, PIPEASRC, ((w - 1) << 16) | (h - 1))?;
    reg(&mut d, DSPASTRIDE, pitch)?;
    reg(&mut d, DSPASURF, fbs[0].gma as u32)?;
    reg(&mut d, DSPACNTR, PLANE_ENABLE | FMT_XRGB8888)?;
    reg(&mut d, DISPLAY_READY, 1)?;
    // The rest of the workload: a PPGTT store, vblank events on.
    let p = Ppgtt::setup(&mut d)?;
    ppgtt_store(&mut d, &p, 0x5100_0001)?;
    reg(&mut d, DEIER, 0)?;
    reg(&mut d, DEIMR, !1)?;
    let frames = vblank_latched(&mut d)?;
    println!("L2: display ppgtt store ok, vblank latched, frame counter {frames}");
    // Open the command port before saying we are ready: a UART drops what
    // it receives while nobody has it open.
    let tty = fs::File::open("/dev/ttyS1").map_err(|err| Error::Io {
        what: "open /dev/ttyS1".into(),
        err,
    })?;
    println!("L2: display A {w}x{h} stride {pitch} frame 1");

    for line in BufReader::new(tty).lines() {
        match line.unwrap_or_default().trim() {
            "flip" => {
                // Where the guest runs now (after a migration: the
                // target), its PPGTT and vblank still work.
                ppgtt_store(&mut d, &p, 0x5100_0002)?;
                let now = vblank_latched(&mut d)?;
                println!("L2: display ppgtt store ok, vblank latched, frame counter {now} (was {frames})");
                if now <= frames {
                    return Err(Error::BadInput(format!(
                        "the frame counter went from {frames} to {now}"
                    )));
                }
                let (n, subs) = draw(&mut d, fbs[1], 2, w, h)?;
                println!(
                    "L2: display drew frame 2: {n} blits in {subs} submissions at {}",
                    uptime()
                );
                reg(&mut d, DSPASURF, fbs[1].gma as u32)?;
                println!("L2: display B {w}x{h} frame 2");
            }
            "done" => return Ok(()),
            _ => {}
        }
    }
    Err(Error::BadInput("/dev/ttyS1 closed".into()))
}

fn main() {
    if let Err(e) = run() {
        println!("L2: display error: {e}");
        exit(1);
    }
}
