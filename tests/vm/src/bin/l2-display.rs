//! L2 program (runs inside the nested guest, `gvt.l2=display`): a minimal
//! vGPU-aware display driver.  It reads the monitor's preferred mode from the
//! vGPU's EDID page (what the VMM wrote through the EDID region), backs two
//! framebuffers with its own RAM through the GGTT (frames from
//! `/proc/self/pagemap`), draws [`gvt_vmtests::display_pixel`] patterns
//! through the aperture, programs the primary plane and sets PVINFO
//! `display_ready`.  It then waits for L1's commands on the second serial
//! port (`/dev/ttyS1`): `flip` shows the second framebuffer, `done` exits.
//! Prints `L2: display ...` lines the L1 test waits for.

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::process::exit;

use gvt_vmtests::display_pixel;

const PVINFO: usize = 0x78000;
const DISPLAY_READY: usize = PVINFO + 0x804;
const GGTT: usize = 8 << 20;
const DSPACNTR: usize = 0x70180;
const DSPASTRIDE: usize = 0x70188;
const DSPASURF: usize = 0x7019C;
const PIPEASRC: usize = 0x6001C;
const EDID_STATUS: usize = 0x79200;
const EDID_MODE: usize = 0x7920C;

fn fail(msg: &str) -> ! {
    println!("L2: display error: {msg}");
    exit(1)
}





/// `pages` pages of locked RAM and their guest-physical frame numbers.
fn ram(pages: usize) -> Vec<u64> {
    let len = pages * 4096;
    // SAFETY: a fresh private anonymous mapping, populated and locked so its
    // frames stay put while the GGTT points at them.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | libc::MAP_LOCKED,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        fail(&format!("mmap {len:#x} of RAM: {}", std::io::Error::last_os_error()));
    }
    for i in 0..pages {
        // SAFETY: inside the mapping; makes each page present and private.
        unsafe { std::ptr::write_volatile(p.cast::<u8>().add(i * 4096), 1) };
    }
    let mut pm = fs::File::open("/proc/self/pagemap").unwrap_or_else(|e| fail(&format!("pagemap: {e}")));
    pm.seek(SeekFrom::Start((p as u64 / 4096) * 8)).unwrap_or_else(|e| fail(&format!("pagemap seek: {e}")));
    let mut raw = vec![0u8; pages * 8];
    pm.read_exact(&mut raw).unwrap_or_else(|e| fail(&format!("pagemap read: {e}")));
    raw.chunks(8)
        .map(|c| {
            let e = u64::from_le_bytes(c.try_into().unwrap());
            if e & (1 << 63) == 0 || e & ((1 << 55) - 1) == 0 {
                fail("a framebuffer page is not present (or pagemap hides frames)");
            }
            e & ((1 << 55) - 1)
        })
        .collect()
}

/// Seconds since boot (progress lines).
fn uptime() -> String {
    fs::read_to_string("/proc/uptime").unwrap_or_default().split_whitespace().next().unwrap_or("?").to_string()
}

use gvt_vmtests::l2::Resource;

fn main() {
    let mut dev = None;
    for e in fs::read_dir("/sys/bus/pci/devices").unwrap_or_else(|e| fail(&e.to_string())) {
        let d = e.unwrap().path();
        let id = |f: &str| fs::read_to_string(d.join(f)).unwrap_or_default().trim().to_string();
        if id("vendor") == "0x1234" && id("device") == "0x6776" {
            dev = Some(d);
        }
    }
    let dev = dev.unwrap_or_else(|| fail("no 1234:6776 device"));
    let r0 = Resource::map(&dev.join("resource0").to_string_lossy(), 0, 16 << 20).unwrap_or_else(|e| fail(&e));
    let ap_base = r0.rd(PVINFO + 0x40) as usize;

    // The monitor the VMM described (EDID region -> the vGPU's EDID page).
    if r0.rd(EDID_STATUS) & 1 == 0 {
        fail("no monitor connected");
    }
    let mode = r0.rd(EDID_MODE);
    let (w, h) = ((mode >> 16) + 1, (mode & 0xFFFF) + 1);
    println!("L2: display edid {w}x{h}");
    let stride = (w * 4).div_ceil(64) * 64;
    let pages = (stride as usize * h as usize).div_ceil(4096);

    // Two framebuffers in the aperture slice, backed by our RAM.
    let frames = ram(2 * pages);
    println!("L2: display ram {} pages at {}", frames.len(), uptime());
    for (i, pfn) in frames.iter().enumerate() {
        r0.wr64(GGTT + (ap_base / 4096 + i) * 8, (pfn << 12) | 1);
    }
    println!("L2: display ggtt mapped at {}", uptime());
    let ap = Resource::map(&dev.join("resource2").to_string_lossy(), ap_base, 2 * pages * 4096).unwrap_or_else(|e| fail(&e));
    let draw = |fb: usize, seed: u32| {
        for y in 0..h {
            if y % 128 == 0 {
                println!("L2: display drawing line {y} at {}", uptime());
            }
            for x in 0..w {
                ap.wr(fb * pages * 4096 + (y * stride + 4 * x) as usize, display_pixel(seed, x, y));
            }
        }
    };
    draw(0, 1);
    r0.wr(PIPEASRC, ((w - 1) << 16) | (h - 1));
    r0.wr(DSPASTRIDE, stride);
    r0.wr(DSPASURF, ap_base as u32);
    r0.wr(DSPACNTR, (1 << 31) | (6 << 26));
    r0.wr(DISPLAY_READY, 1);
    // Open the command port before saying we are ready: a UART drops what
    // it receives while nobody has it open.
    let tty = fs::File::open("/dev/ttyS1").unwrap_or_else(|e| fail(&format!("/dev/ttyS1: {e}")));
    println!("L2: display A {w}x{h} stride {stride}");

    for line in BufReader::new(tty).lines() {
        match line.unwrap_or_default().trim() {
            "flip" => {
                draw(1, 2);
                r0.wr(DSPASURF, (ap_base + pages * 4096) as u32);
                println!("L2: display B");
            }
            "done" => return,
            _ => {}
        }
    }
    fail("/dev/ttyS1 closed");
}
