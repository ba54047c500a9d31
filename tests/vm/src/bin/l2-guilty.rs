//! L2 program (`gvt.l2=guilty`): a guest that makes its vGPU hang until the
//! vGPU is Failed, to see what an unmodified VMM does with the ERR irq
//! (the L1 test loads gvt_rs with `hang_threshold=1` and expects QEMU to
//! stop this VM with its "Unrecoverable error detected" message).
//!
//! The hang is the one the L1 test `submission_failed_vgpu_signals_the_err_irq`
//! provokes: a render-engine store through the guest's PPGTT, audited while
//! the page is mapped; before the engine gets to it, the guest unmaps the
//! page in its own page table and submits again (which re-syncs the shadow
//! PPGTT), so the engine faults at the store and makes no progress until the
//! watchdog blames this vGPU.  "Before the engine gets to it": after
//! `L2: guilty ready` the L1 test gives this VM's vCPU thread a real-time
//! priority, so the module's engine worker (an ordinary kworker on L1's one
//! CPU) cannot run between the two submissions, which never leave the vCPU
//! thread (each is an MMIO exit QEMU handles in that thread); it runs when
//! this guest sleeps.  Should the store still win, the guest tries again.
//! Prints `L2: guilty ...` lines; once the hang is blamed it prints a
//! heartbeat the L1 test watches stop.

use std::process::exit;
use std::thread::sleep;
use std::time::{Duration, Instant};

use gvt_guest_driver::driver::{error_irq, RCS};
use gvt_guest_driver::gvt_core::cmd::encode::sdi;
use gvt_guest_driver::gvt_core::cmd::{Space, MI_NOOP};
use gvt_guest_driver::gvt_core::reset::EIR_HANG;
use gvt_guest_driver::jobs::Ppgtt;
use gvt_guest_driver::{Error, Result};

const T: Duration = Duration::from_secs(120);

fn run() -> Result<()> {
    let mut d = gvt_vmtests::l2::boot_vgpu("guilty", 128)?;
    let p = Ppgtt::setup(&mut d)?;
    println!("L2: guilty ready");
    // The L1 test raises this vCPU's priority meanwhile.
    sleep(Duration::from_secs(5));
    let t0 = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        if t0.elapsed() > T {
            return Err(Error::BadInput(format!(
                "no hang in {attempt} attempts: the engine ran the store first every time"
            )));
        }
        p.set_present(&mut d, true)?;
        d.write_phys(p.data_gpa + 0x40, &[0])?;
        d.submit(RCS, &sdi(Space::Ppgtt, 0x40, attempt))?;
        p.set_present(&mut d, false)?;
        d.submit(RCS, &[MI_NOOP, MI_NOOP])?;
        match d.wait_idle(RCS, T) {
            Ok(_) => {
                let v = d.read_phys(p.data_gpa + 0x40)?;
                println!("L2: guilty attempt {attempt}: the store ran first ({v:#x}); again");
            }
            Err(Error::EngineError { iir, eir, .. }) => {
                println!("L2: guilty attempt {attempt}: engine error iir={iir:#x} eir={eir:#x}");
                let t = Instant::now();
                while d.eir(RCS)? & EIR_HANG == 0 {
                    if t.elapsed() > T {
                        return Err(Error::BadInput(format!(
                            "engine fault but no hang blamed in {T:?}"
                        )));
                    }
                    sleep(Duration::from_millis(10));
                }
                println!("L2: guilty hang blamed; the vGPU is failed (hang_threshold=1)");
                // A stopped VM prints nothing more: the test watches these stop.
                for n in 0.. {
                    println!("L2: guilty alive {n}");
                    sleep(Duration::from_millis(500));
                }
            }
            Err(e) => return Err(e),
        }
        let iir = d.iir()?;
        d.ack(iir & !error_irq(RCS))?;
    }
}

fn main() {
    if let Err(e) = run() {
        println!("L2: guilty error: {e}");
        exit(1);
    }
}
