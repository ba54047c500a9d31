//! L2 program (runs inside the nested guest, `gvt.l2=vgpu`): finds the vGPU
//! that an unmodified QEMU passed through (vendor 0x1234, device 0x6776),
//! checks its BAR sizes from sysfs, reads PVINFO through `resource0`, and
//! writes/reads its aperture slice through `resource2`.  Prints
//! `L2: vgpu ...` lines the L1 test checks; exits non-zero on any mismatch.
//! Static, std + libc only.

use std::fs;
use std::process::exit;

const PVINFO: usize = 0x78000;
const MAGIC: u64 = 0x4776_5447_7654_4776;
/// What L2 writes into its slice (the L1 test reads it back through VFIO).
const PATTERN: u32 = 0x4C32_0000;

fn fail(msg: &str) -> ! {
    println!("L2: vgpu error: {msg}");
    exit(1)
}

use gvt_vmtests::l2::Resource;

fn main() {
    let mut dev = None;
    for e in fs::read_dir("/sys/bus/pci/devices").unwrap_or_else(|e| fail(&e.to_string())) {
        let d = e.unwrap().path();
        let id = |f: &str| {
            fs::read_to_string(d.join(f))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        if id("vendor") == "0x1234" && id("device") == "0x6776" {
            dev = Some(d);
        }
    }
    let dev = dev.unwrap_or_else(|| fail("no 1234:6776 device"));
    let res = fs::read_to_string(dev.join("resource")).unwrap_or_else(|e| fail(&e.to_string()));
    let size = |line: usize| -> u64 {
        let f: Vec<u64> = res
            .lines()
            .nth(line)
            .unwrap_or("")
            .split_whitespace()
            .map(|x| u64::from_str_radix(x.trim_start_matches("0x"), 16).unwrap_or(0))
            .collect();
        if f.len() < 2 || f[1] == 0 {
            0
        } else {
            f[1] - f[0] + 1
        }
    };
    let (bar0, bar2) = (size(0), size(2));
    println!("L2: vgpu bars bar0={bar0:#x} bar2={bar2:#x}");
    if bar0 != 16 << 20 {
        fail("BAR0 is not 16 MiB");
    }
    let cmd = fs::read(dev.join("config")).unwrap_or_default();
    if cmd.len() >= 6 && cmd[4] & 2 == 0 {
        fail("memory decode is off");
    }

    let r0 = Resource::map(&dev.join("resource0").to_string_lossy(), 0, 16 << 20)
        .unwrap_or_else(|e| fail(&e));
    let magic = u64::from(r0.rd(PVINFO)) | (u64::from(r0.rd(PVINFO + 4)) << 32);
    let (base, len) = (r0.rd(PVINFO + 0x40) as usize, r0.rd(PVINFO + 0x44) as usize);
    let vgt_id = r0.rd(PVINFO + 0x0C);
    println!("L2: vgpu pvinfo magic={magic:#x} vgt_id={vgt_id} mappable={base:#x}+{len:#x}");
    if magic != MAGIC {
        fail("bad PVINFO magic");
    }
    if len == 0 || base + len > bar2 as usize {
        fail("mappable range outside BAR2");
    }

    // The slice: mapped straight through (no trap in L1).
    let pages = 4;
    let r2 = Resource::map(&dev.join("resource2").to_string_lossy(), base, pages * 4096)
        .unwrap_or_else(|e| fail(&e));
    // L2 maps no GGTT entry, so every page of its slice reaches the same
    // scratch page: check each write right away.
    for p in 0..pages {
        r2.wr(p * 4096 + 16, PATTERN | p as u32);
        let v = r2.rd(p * 4096 + 16);
        if v != PATTERN | p as u32 {
            fail(&format!("aperture page {p}: read {v:#x}"));
        }
    }
    println!("L2: vgpu aperture ok base={base:#x} pages={pages}");
    // Outside the slice: ballooned (the VMM traps it; reads 0, writes dropped).
    let out = if base > 0 { 0 } else { base + len };
    if out + 4096 <= bar2 as usize {
        let o = Resource::map(&dev.join("resource2").to_string_lossy(), out, 4096)
            .unwrap_or_else(|e| fail(&e));
        o.wr(0, 0xFFFF_FFFF);
        let v = o.rd(0);
        println!("L2: vgpu ballooned read={v:#x}");
        if v != 0 {
            fail("outside the slice is not ballooned");
        }
    }
}
