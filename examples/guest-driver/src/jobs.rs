//! Canned work with checkable results: what the VM tests, the CLI and the
//! nested-guest program submit.  Every command comes from
//! [`gvt_core::cmd::encode`].
//!
//! - **blit job** (blitter): XY_COLOR_BLT fills 64×16 pixels at the start of
//!   the surfaces (high GM), XY_SRC_COPY_BLT copies a 32×8 part of it (from
//!   (8, 4)) to the start of the results area (aperture), MI_FLUSH_DW stores a
//!   marker, MI_USER_INTERRUPT;
//! - **store job** (render): MI_STORE_DATA_IMM of a value, MI_USER_INTERRUPT;
//! - **PPGTT**: a one-page local address space (page directory in high GM,
//!   page table and data page in RAM) for stores through the PPGTT.

use std::time::Duration;

use gvt_core::cmd::encode::{color_blt, flush_dw_store, sdi, src_copy_blt};
use gvt_core::cmd::{Space, MI_USER_INTERRUPT};

use crate::backend::Backend;
use crate::driver::{user_irq, Driver, BCS, PAGE, RCS};
use crate::error::{Error, Result};

/// Pitch of the job surfaces: 128 pixels of 32 bpp.
pub const PITCH: u32 = 512;
/// Filled rectangle.
pub const FILL_W: u64 = 64;
pub const FILL_H: u64 = 16;
/// Copied rectangle (from (8, 4) of the fill).
pub const COPY_W: u64 = 32;
pub const COPY_H: u64 = 8;

/// Where the blit job's marker goes (results area + 0x10000).
pub fn marker_addr<B: Backend>(d: &Driver<B>) -> u64 {
    d.layout().results() + 0x10000
}

/// Where the store job's value goes.
pub fn store_addr<B: Backend>(d: &Driver<B>) -> u64 {
    d.layout().results() + 0x10010
}

/// The blitter job's commands.
pub fn blit_job<B: Backend>(d: &Driver<B>, color: u32, marker: u32) -> Vec<u32> {
    let l = d.layout();
    let fill = color_blt(
        l.surfaces(),
        PITCH,
        (0, 0, FILL_W as u32, FILL_H as u32),
        color,
    );
    let copy = src_copy_blt(
        l.results(),
        PITCH,
        (0, 0, COPY_W as u32, COPY_H as u32),
        l.surfaces(),
        PITCH,
        (8, 4),
    );
    let store = flush_dw_store(Space::Ggtt, marker_addr(d), marker, false);
    [&fill[..], &copy[..], &store[..], &[MI_USER_INTERRUPT]].concat()
}

/// The render job's commands.
pub fn store_job<B: Backend>(d: &Driver<B>, value: u32) -> Vec<u32> {
    [
        &sdi(Space::Ggtt, store_addr(d), value)[..],
        &[MI_USER_INTERRUPT],
    ]
    .concat()
}

fn expect<B: Backend>(
    d: &mut Driver<B>,
    what: &str,
    at: u64,
    expected: u32,
    ram: bool,
) -> Result<()> {
    let got = if ram { d.read_ram(at)? } else { d.read(at)? };
    if got == expected {
        Ok(())
    } else {
        Err(Error::Mismatch {
            what: what.into(),
            at,
            expected,
            got,
        })
    }
}

/// Check the blit job's pixels exactly (a border of untouched zeros
/// around both rectangles): the fill read from the RAM pages behind the
/// surfaces, the copy both through the aperture and from its RAM pages,
/// the marker through the aperture.
pub fn check_blit<B: Backend>(d: &mut Driver<B>, color: u32, marker: u32) -> Result<()> {
    let l = d.layout();
    let p = u64::from(PITCH);
    for y in 0..FILL_H + 2 {
        for x in 0..FILL_W + 2 {
            let inside = x < FILL_W && y < FILL_H;
            expect(
                d,
                "fill pixel (RAM)",
                l.surfaces() + y * p + 4 * x,
                if inside { color } else { 0 },
                true,
            )?;
        }
    }
    for y in 0..COPY_H + 1 {
        for x in 0..COPY_W + 1 {
            let want = if x < COPY_W && y < COPY_H { color } else { 0 };
            let at = l.results() + y * p + 4 * x;
            expect(d, "copied pixel (aperture)", at, want, false)?;
            expect(d, "copied pixel (RAM)", at, want, true)?;
        }
    }
    let m = marker_addr(d);
    expect(d, "post-sync store", m, marker, false)
}

/// Check the store job's value (aperture and RAM).
pub fn check_store<B: Backend>(d: &mut Driver<B>, value: u32) -> Result<()> {
    let a = store_addr(d);
    expect(d, "stored dword (aperture)", a, value, false)?;
    expect(d, "stored dword (RAM)", a, value, true)
}

/// What one round of [`run_round`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    /// GT IIR after both engines went idle (before acknowledging).
    pub iir: u32,
    /// Interrupts signalled (MSI eventfd count; 0 when polling).
    pub irqs: u64,
}

/// One round: the blit job on the blitter and the store job on render,
/// both submitted before waiting; wait for both (user interrupts, HEAD),
/// check every result, acknowledge.  Errors on a missing user interrupt or
/// any error interrupt.
pub fn run_round<B: Backend>(
    d: &mut Driver<B>,
    color: u32,
    marker: u32,
    value: u32,
    timeout: Duration,
) -> Result<Round> {
    let blit = blit_job(d, color, marker);
    let store = store_job(d, value);
    d.submit(BCS, &blit)?;
    d.submit(RCS, &store)?;
    let w = d.wait_all(user_irq(RCS) | user_irq(BCS), timeout)?;
    let a = d.wait_idle(BCS, timeout)?;
    let b = d.wait_idle(RCS, timeout)?;
    let iir = w.iir | a.iir | b.iir;
    d.ack(iir)?;
    check_blit(d, color, marker)?;
    check_store(d, value)?;
    Ok(Round {
        iir,
        irqs: w.irqs + a.irqs + b.irqs,
    })
}

/// A one-page local address space: PPGTT address `0..4096` maps `data_gpa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ppgtt {
    /// Graphics address of the page directory (in high GM).
    pub pd: u64,
    /// Guest physical address of the page table.
    pub pt_gpa: u64,
    /// Guest physical address of the data page.
    pub data_gpa: u64,
}

impl Ppgtt {
    /// Build it (PD at the layout's page directory, PT and data page from
    /// the driver's free RAM) and load PP_DIR_BASE.
    pub fn setup<B: Backend>(d: &mut Driver<B>) -> Result<Ppgtt> {
        let pd = d.layout().page_directory();
        if d.gpa_of(pd).is_none() {
            d.map(pd, 1)?;
        }
        let pt_gpa = d.alloc_page()?;
        let data_gpa = d.alloc_page()?;
        for i in 0..(PAGE / 4) as u32 {
            d.write(pd + 4 * u64::from(i), &[0])?;
            d.write_phys(pt_gpa + 4 * u64::from(i), &[0])?;
        }
        d.write(pd, &[(pt_gpa as u32) | 1, (pt_gpa >> 32) as u32])?;
        let p = Ppgtt {
            pd,
            pt_gpa,
            data_gpa,
        };
        p.set_present(d, true)?;
        d.set_ppgtt(pd)?;
        Ok(p)
    }

    /// Write the page table's entry 0: the data page, or not present.
    pub fn set_present<B: Backend>(&self, d: &mut Driver<B>, present: bool) -> Result<()> {
        let e = if present { self.data_gpa | 1 } else { 0 };
        d.write_phys(self.pt_gpa, &[e as u32, (e >> 32) as u32])
    }
}
