//! L2 program (`gvt.l2=guestdrv`): the reference guest driver
//! (`examples/guest-driver`, sysfs backend) inside the nested guest of an
//! unmodified QEMU that was given a gvt_rs vGPU with
//! `-device vfio-pci,sysfsdev=...`, or of cloud-hypervisor with
//! `--device path=...`.  It finds the vGPU's PCI function,
//! binds through `resource0`/`resource2`, backs its graphics memory with
//! locked pages of L2's RAM (physical addresses from `/proc/self/pagemap`;
//! L2 runs as root), and checks fills, copies, stores, a PPGTT store and
//! the rejection of a store outside its memory — polling HEAD and the GT
//! IIR, since no interrupt reaches user space here.  It prints `L2:
//! guestdrv ...` lines the L1 test checks and exits non-zero on failure.

use std::process::exit;
use std::time::Duration;

use gvt_guest_driver::driver::{user_irq, RCS};
use gvt_guest_driver::gvt_core::cmd::encode::sdi;
use gvt_guest_driver::gvt_core::cmd::{Space, MI_USER_INTERRUPT};
use gvt_guest_driver::jobs::{self, Ppgtt};
use gvt_guest_driver::{Error, Result};

const T: Duration = Duration::from_secs(120);

fn run() -> Result<()> {
    let mut d = gvt_vmtests::l2::boot_vgpu("guestdrv", 128)?;
    for r in 0..3u32 {
        let x = jobs::run_round(&mut d, 0xFF20_0000 | r, 0xD200_0000 | r, 0x5200_0000 | r, T)?;
        println!("L2: guestdrv round {r} ok iir={:#x}", x.iir);
    }
    let p = Ppgtt::setup(&mut d)?;
    d.submit(
        RCS,
        &[
            &sdi(Space::Ppgtt, 0x80, 0x1234_5678)[..],
            &[MI_USER_INTERRUPT],
        ]
        .concat(),
    )?;
    d.wait_all(user_irq(RCS), T)?;
    d.wait_idle(RCS, T)?;
    let v = d.read_phys(p.data_gpa + 0x80)?;
    if v != 0x1234_5678 {
        return Err(Error::Mismatch {
            what: "PPGTT store".into(),
            at: p.data_gpa + 0x80,
            expected: 0x1234_5678,
            got: v,
        });
    }
    d.ack(user_irq(RCS))?;
    println!("L2: guestdrv ppgtt ok data={:#x}", p.data_gpa);
    // A store outside its graphics memory: refused with an error.
    let outside = if d.aperture().base > 0 {
        0
    } else {
        d.aperture().end()
    };
    d.submit(RCS, &sdi(Space::Ggtt, outside, 0x666))?;
    match d.wait_idle(RCS, T) {
        Err(Error::EngineError { iir, eir, .. }) => {
            println!("L2: guestdrv rejected ok iir={iir:#x} eir={eir:#x}")
        }
        Ok(_) => {
            return Err(Error::BadInput(
                "a store outside the vGPU's memory was accepted".into(),
            ))
        }
        Err(e) => return Err(e),
    }
    d.recover(RCS)?;
    jobs::run_round(&mut d, 0xFF21_0000, 0xD210_0000, 0x5210_0000, T)?;
    println!("L2: guestdrv recovered ok");
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        println!("L2: guestdrv error: {e}");
        exit(1);
    }
}
