//! gvt-guest-driver: a small user-space reference driver for a gvt-rs vGPU
//! (paper §3.3–3.5 from the guest's side).
//!
//! Given a vGPU's BARs it reads PVINFO, balloons (uses only the graphics
//! memory slices PVINFO gives it), backs graphics memory with its RAM pages
//! through GGTT entries written in BAR0, programs the render and blitter
//! rings, submits batches (XY_COLOR_BLT fills, XY_SRC_COPY_BLT copies,
//! MI_STORE_DATA_IMM / MI_FLUSH_DW stores, stores through a PPGTT), waits
//! for the user interrupt or polls HEAD, and checks the results in its own
//! RAM.  The device model is gvt-core's reference guest
//! ([`gvt_guest`]) and command encoder ([`gvt_core::cmd::encode`]);
//! this crate adds real buses ([`backend::Backend`]):
//!
//! - [`vfio::VfioBackend`]: the vGPU through VFIO (what a VMM has), guest
//!   RAM = an anonymous buffer registered with `VFIO_IOMMU_MAP_DMA`;
//! - [`sysfs::SysfsBackend`]: the vGPU's PCI function inside a guest
//!   (`resource0`/`resource2`), RAM pages from `/proc/self/pagemap`.
//!
//! The VM tests (`tests/vm`) drive several vGPUs with it through the real
//! driver, and run it inside the L2 guest of an unmodified QEMU.

pub mod backend;
pub mod driver;
pub mod error;
pub mod jobs;
pub mod mmap;
pub mod sysfs;
pub mod vfio;

pub use backend::{Backend, GuestBus, IrqWait};
pub use driver::{BootConfig, Driver, Layout, Waited, BCS, ERROR_IRQS, RCS, USER_IRQS};
pub use error::{Error, Result};
pub use gvt_core;
pub use gvt_guest::PteWidth;

/// Run `rounds` rounds of [`jobs::run_round`] with colours derived from
/// `seed`; returns the interrupts seen.  What the CLI and the nested-guest
/// program do after [`Driver::boot`].
pub fn selftest<B: Backend>(
    d: &mut Driver<B>,
    seed: u32,
    rounds: u32,
    timeout: std::time::Duration,
) -> Result<u64> {
    let mut irqs = 0;
    for r in 0..rounds {
        let color = 0xFF00_0000
            | (seed.wrapping_mul(0x0001_0203) ^ r.wrapping_mul(0x0004_0506)) & 0x00FF_FFFF;
        let round = jobs::run_round(
            d,
            color,
            0xD000_0000 | (seed << 8) | r,
            0x5000_0000 | (seed << 8) | r,
            timeout,
        )?;
        irqs += round.irqs;
    }
    Ok(irqs)
}
