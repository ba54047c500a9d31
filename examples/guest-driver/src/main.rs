//! `gvt-guest-driver`: bind the reference driver to a vGPU and run the
//! self-test (blits, copies, stores, interrupts, checked pixels).
//!
//! ```text
//! gvt-guest-driver vfio /sys/bus/mdev/devices/UUID [ROUNDS]
//! gvt-guest-driver sysfs [/sys/bus/pci/devices/BDF] [ROUNDS]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use gvt_guest_driver::sysfs::SysfsBackend;
use gvt_guest_driver::vfio::{RamConfig, VfioBackend};
use gvt_guest_driver::{selftest, Backend, BootConfig, Driver, Result};

const USAGE: &str = "usage: gvt-guest-driver vfio SYSFS_PATH [ROUNDS] | sysfs [PCI_DIR] [ROUNDS]";

fn run<B: Backend>(bus: B, rounds: u32) -> Result<()> {
    println!("device: {}", bus.describe());
    let mut d = Driver::probe(bus)?;
    println!(
        "pvinfo: vgt_id {} aperture {:#x}+{:#x} high {:#x}+{:#x} fences {}",
        d.vgt_id(),
        d.aperture().base,
        d.aperture().size,
        d.high().base,
        d.high().size,
        d.fences()
    );
    d.boot(BootConfig::DEFAULT)?;
    let seed = d.vgt_id();
    let irqs = selftest(&mut d, seed, rounds, Duration::from_secs(30))?;
    println!("ok: {rounds} rounds of fill+copy+store checked, {irqs} interrupts");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |s: Option<&String>| {
        s.map_or(Ok(3), |s| {
            s.parse::<u32>().map_err(|e| format!("rounds {s:?}: {e}"))
        })
    };
    let r = match args.first().map(String::as_str) {
        Some("vfio") if args.len() >= 2 => num(args.get(2)).and_then(|n| {
            VfioBackend::open(&PathBuf::from(&args[1]), RamConfig::DEFAULT)
                .and_then(|b| run(b, n))
                .map_err(|e| e.to_string())
        }),
        Some("sysfs") => {
            let (dir, n) = match args.get(1) {
                Some(a) if a.starts_with('/') => (Ok(PathBuf::from(a)), num(args.get(2))),
                other => (SysfsBackend::find(), num(other)),
            };
            n.and_then(|n| {
                dir.and_then(|d| SysfsBackend::open(&d, 160))
                    .and_then(|b| run(b, n))
                    .map_err(|e| e.to_string())
            })
        }
        _ => Err(USAGE.to_string()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gvt-guest-driver: {e}");
            ExitCode::FAILURE
        }
    }
}
