//! Fuzz target: the migration resume parser and restore (issue 14).
//!
//! A fresh target vGPU takes either the raw input as a stream (first byte
//! even) or a valid stream from a vGPU with GGTT entries, ring programming,
//! a fence and a display plane (bit 2 of the first byte: written in PRE_COPY
//! parts, with GGTT delta records and resent sections), edited by the input's `(offset: u16, xor:
//! u8)` triples and resealed with a correct checksum (first byte odd: the
//! contents, not the checksum, are tested).  The target has the source's
//! placement (bit 1 of the first byte clear) or another one of the same
//! sizes (set: the stream's GM view is then translated).  Oracle: never a
//! panic; a stream refused before the replay ([`MigrationError`] other than
//! `Replay`) leaves the target's registers, guest GGTT and pins as they
//! were; whatever the outcome, no physical GGTT entry outside the target's
//! own placement (and the host's shadow area) changed, whatever view the
//! stream names; after any outcome a reset releases every pin (no leak).
#![no_main]

use std::cell::Cell;
use std::sync::OnceLock;

use gvt_core::backend::Pte;
use gvt_core::fakes::{FakeGuestMemory, FakeHostMemory, FakeHostPages};
use gvt_core::gpu::{Gpu, GpuConfig, SHADOW_PAGES_PER_VGPU};
use gvt_core::mem::{GmRange, HostPage, PAGE_SIZE};
use gvt_core::migration;
use gvt_core::mmio::GGTT_VIEW_BASE;
use gvt_core::partition::Partition;
use gvt_core::regs::{self, ring, DSPACNTR, DSPASTRIDE, DSPASURF, PIPEASRC};
use gvt_core::services::{Clock, CpuMappings, Held};
use gvt_core::vgpu::{storage_sizes, Env, Vgpu, VgpuParams, VgpuStorage};
use gvt_core::vgpu_migrate::{MigrationError, Precopy};
use libfuzzer_sys::fuzz_target;

const TYPE: &[u8] = b"gvt_rs-fuzz";

struct T(Cell<u64>);
impl Clock for T {
    fn now_ns(&self) -> u64 {
        let t = self.0.get() + 1000;
        self.0.set(t);
        t
    }
}
struct NoCpu;
impl CpuMappings for NoCpu {
    fn invalidate(&mut self, _: u64) {}
}

fn part() -> Partition {
    Partition {
        aperture: GmRange::new(1 << 20, 1 << 20),
        high: GmRange::new(8 << 20, 1 << 20),
        fence_base: 4,
        fence_count: 4,
    }
}

/// Another placement of the same sizes (the source's view is then
/// translated).
fn other_part() -> Partition {
    Partition {
        aperture: GmRange::new(3 << 20, 1 << 20),
        high: GmRange::new(11 << 20, 1 << 20),
        fence_base: 0,
        fence_count: 4,
    }
}

/// The host-reserved top of the 32 MiB GM (shadow rings and batches).
const RESERVED_FROM: usize = (16 << 20) / PAGE_SIZE as usize;

struct Rig {
    gpu: Gpu<2>,
    phys: Vec<Pte>,
    host: FakeHostMemory,
    pages: FakeHostPages,
    clock: T,
    ram: FakeGuestMemory,
    vregs: Vec<u32>,
    gg: Vec<u64>,
    gs: Vec<u64>,
    snap: Vec<u64>,
    v: Vgpu<4>,
}

macro_rules! call {
    ($r:expr, |$v:ident, $env:ident| $body:expr) => {{
        let r: &mut Rig = &mut *$r;
        let mut lock = Held::new(&mut r.gpu, &mut r.phys);
        let mut cpu = NoCpu;
        let st = VgpuStorage {
            vregs: &mut r.vregs,
            ggtt_guest: &mut r.gg,
            ggtt_shadow: &mut r.gs,
            ppgtt_snap: &mut r.snap,
        };
        let mut $env = Env::new(st, &mut lock, &mut r.host, &mut r.pages, &r.clock, &mut r.ram, &mut cpu);
        let $v = &mut r.v;
        $body
    }};
}

fn rig() -> Rig {
    rig_at(part())
}

fn rig_at(at: Partition) -> Rig {
    let mut phys = vec![Pte::default(); 8192];
    let mut gpu = Gpu::new(GpuConfig::DEFAULT, &mut phys).unwrap();
    let (nv, ng, ns) = storage_sizes::<4>(&at);
    let (mut vregs, mut gg, mut gs, mut snap) = (vec![0; nv], vec![0; ng], vec![0; ng], vec![0; ns]);
    let mut host = FakeHostMemory::new(700);
    let mut pages = FakeHostPages::new(600, 100);
    let clock = T(Cell::new(0));
    let mut ram = FakeGuestMemory::new(0x100, 64, 0);
    let shadow: Vec<HostPage> = (0..SHADOW_PAGES_PER_VGPU as u64).map(|i| HostPage(100 + i)).collect();
    let p = VgpuParams {
        id: 3,
        part: at,
        aperture_size: 4 << 20,
        weight: 1,
        scratch: HostPage(99),
        shadow_pages: &shadow,
    };
    let v = {
        let st = VgpuStorage { vregs: &mut vregs, ggtt_guest: &mut gg, ggtt_shadow: &mut gs, ppgtt_snap: &mut snap };
        let (mut lock, mut cpu) = (Held::new(&mut gpu, &mut phys), NoCpu);
        let mut env = Env::new(st, &mut lock, &mut host, &mut pages, &clock, &mut ram, &mut cpu);
        Vgpu::create(p, &mut env).unwrap()
    };
    Rig { gpu, phys, host, pages, clock, ram, vregs, gg, gs, snap, v }
}

/// A valid stream: GGTT entries, a ring, a fence, a plane, PP_DIR_BASE;
/// `precopy`: written as PRE_COPY writes it (an initial part, GGTT writes,
/// a round, more GGTT writes and a register, the final part).
fn valid(precopy: bool) -> &'static [u8] {
    static S: OnceLock<Vec<u8>> = OnceLock::new();
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    (if precopy { &P } else { &S }).get_or_init(|| {
        let mut r = rig();
        let w = |r: &mut Rig, off: u64, d: &[u8]| {
            call!(r, |v, env| v.bar0_write(&mut env, off, d)).unwrap();
        };
        for i in 0..8u64 {
            let off = GGTT_VIEW_BASE + ((1u64 << 20) / PAGE_SIZE + i) * 8;
            w(&mut r, off, &(((0x101 + i) << 12) | 1).to_le_bytes());
        }
        let bcs = gvt_core::backend::EngineId::Bcs;
        w(&mut r, u64::from(bcs.reg(ring::START)), &(1u32 << 20).to_le_bytes());
        w(&mut r, u64::from(bcs.reg(ring::CTL)), &((3u32 << 12) | 1).to_le_bytes());
        w(&mut r, u64::from(bcs.reg(ring::TAIL)), &0u32.to_le_bytes());
        w(&mut r, u64::from(regs::FENCE), &((((2u64 << 20) - 4096) << 32) | (1 << 20) | 1).to_le_bytes());
        w(&mut r, u64::from(PIPEASRC), &((63u32 << 16) | 31).to_le_bytes());
        w(&mut r, u64::from(DSPASTRIDE), &256u32.to_le_bytes());
        w(&mut r, u64::from(DSPASURF), &(1u32 << 20).to_le_bytes());
        w(&mut r, u64::from(DSPACNTR), &((1u32 << 31) | (6 << 26)).to_le_bytes());
        let edid = [7u8; 128];
        let mut buf = vec![0u8; r.v.max_stream_len()];
        if !precopy {
            let n = call!(&mut r, |v, env| v.save_state(&mut env, TYPE, Some(&edid), &mut buf)).unwrap();
            buf.truncate(n);
            return buf;
        }
        let pte = |i: u64| GGTT_VIEW_BASE + ((1u64 << 20) / PAGE_SIZE + i) * 8;
        let hi = |i: u64| GGTT_VIEW_BASE + ((8u64 << 20) / PAGE_SIZE + i) * 8;
        let mut pre = Precopy::default();
        let mut out = Vec::new();
        let n = call!(&mut r, |v, env| v.save_initial(&mut env, TYPE, Some(&edid), &mut buf, &mut pre)).unwrap();
        out.extend_from_slice(&buf[..n]);
        w(&mut r, pte(1), &0u64.to_le_bytes());
        w(&mut r, hi(3), &((0x110u64 << 12) | 1).to_le_bytes());
        let n = call!(&mut r, |v, env| v.save_round(&mut env, Some(&edid), &mut buf, &mut pre)).unwrap();
        out.extend_from_slice(&buf[..n]);
        w(&mut r, pte(1), &((0x111u64 << 12) | 1).to_le_bytes());
        w(&mut r, pte(200), &((0x112u64 << 12) | 1).to_le_bytes());
        let bcs = gvt_core::backend::EngineId::Bcs;
        w(&mut r, u64::from(bcs.reg(0x98)), &0x55u32.to_le_bytes());
        let n = call!(&mut r, |v, env| v.save_final(&mut env, Some(&edid), &mut buf, &mut pre)).unwrap();
        out.extend_from_slice(&buf[..n]);
        out
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut stream;
    if mode & 1 == 0 {
        stream = rest.to_vec();
    } else {
        stream = valid(mode & 4 != 0).to_vec();
        let n = stream.len();
        for e in rest.chunks_exact(3) {
            let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % (n - 16);
            stream[at] ^= e[2];
        }
        let sum = migration::fnv1a64(&stream[..n - 16]);
        stream[n - 8..].copy_from_slice(&sum.to_le_bytes());
    }
    let at = if mode & 2 == 0 { part() } else { other_part() };
    let mut r = rig_at(at);
    let before = (r.vregs.clone(), r.gg.clone(), r.ram.outstanding_pins());
    let phys_before = r.phys.clone();
    let res = call!(&mut r, |v, env| v.restore_state(&mut env, TYPE, &stream).map(|_| ()));
    match res {
        Ok(()) | Err(MigrationError::Replay(_)) => {}
        Err(_) => assert!(
            (r.vregs.clone(), r.gg.clone(), r.ram.outstanding_pins()) == before,
            "a refused stream changed the target"
        ),
    }
    let own = |i: usize| {
        let a = i as u64 * PAGE_SIZE;
        at.aperture.contains(a, 0) || at.high.contains(a, 0) || i >= RESERVED_FROM
    };
    for (i, (p, q)) in r.phys.iter().zip(&phys_before).enumerate() {
        assert!(own(i) || p == q, "physical GGTT entry {i} outside the placement changed");
    }
    if mode & 1 == 1 && rest.len() < 3 {
        // The unedited stream goes in at either placement.
        assert!(res.is_ok(), "a valid stream was refused: {res:?}");
    }
    call!(&mut r, |v, env| v.reset(&mut env));
    assert_eq!(r.ram.outstanding_pins(), 0, "pins leaked");
});
