//! GGTT PTE update throughput: a trapped guest PTE write through the shadow
//! GGTT (decode, slice check, audit, translation by pinning the guest frame,
//! physical write, unpin of the old frame) against a raw write of the
//! physical GGTT with no audit, measured in the same run on the same entries.
//! Prints updates/s and the ratio; asserts nothing about time.
//!
//! Run: cargo bench -p gvt-core --features fakes --bench ggtt

use std::hint::black_box;
use std::time::{Duration, Instant};

use gvt_core::backend::{Backend, Pte};
use gvt_core::fakes::FakeGuestMemory;
use gvt_core::ggtt::{Ggtt, PteWrite, VgpuGm, GGTT_BAR0_BASE};
use gvt_core::mem::{GmRange, HostPage, PAGE_SIZE};
use gvt_core::services::{CpuMappings, GuestMemory};

/// The physical GGTT: 4 GiB of graphics memory, 1 Mi entries.
struct PhysGgtt(Vec<Pte>);

impl Backend for PhysGgtt {
    fn read_reg(&mut self, _offset: u32) -> u32 {
        0
    }
    fn write_reg(&mut self, _offset: u32, _value: u32) {}
    fn ggtt_entries(&self) -> u32 {
        self.0.len() as u32
    }
    fn write_ggtt(&mut self, index: u32, pte: Pte) {
        if let Some(e) = self.0.get_mut(index as usize) {
            *e = pte;
        }
    }
    fn read_ggtt(&self, index: u32) -> Pte {
        self.0.get(index as usize).copied().unwrap_or_default()
    }
}

/// Counts invalidations (the kernel would zap a user mapping).
struct Cpu(u64);
impl CpuMappings for Cpu {
    fn invalidate(&mut self, p: u64) {
        self.0 = self.0.wrapping_add(p);
    }
}

const ENTRIES: u64 = 1 << 20;
const ROUNDS: u64 = 8;
const REPEATS: usize = 9;

fn main() {
    // vGPU: 64 MiB of aperture at 64 MiB, 192 MiB high at 1 GiB.
    let gm = VgpuGm {
        aperture: GmRange::new(64 << 20, 64 << 20),
        high: GmRange::new(1 << 30, 192 << 20),
    };
    let n = gm.entries();
    let first: Vec<u64> = (0..gm.aperture.size / PAGE_SIZE)
        .map(|i| gm.aperture.base / PAGE_SIZE + i)
        .chain((0..gm.high.size / PAGE_SIZE).map(|i| gm.high.base / PAGE_SIZE + i))
        .collect();
    // Guest memory: 1 GiB at guest frame 0x10_0000.
    let frames = 1u64 << 18;
    let gfn_base = 0x10_0000u64;
    let mut be = PhysGgtt(vec![Pte::default(); ENTRIES as usize]);
    let mut gmem = FakeGuestMemory::new(gfn_base, frames, 0x400_0000);
    let mut cpu = Cpu(0);
    let (mut gs, mut ss) = (vec![0u64; n], vec![0u64; n]);
    let mut ggtt = Ggtt::new(gm, HostPage(1), &mut gs, &mut ss, &mut be).expect("slices");

    // Value written to entry slot `k` in round `r`: every write changes the
    // frame, so every audited write pins one frame and unpins another.
    let value = |k: u64, r: u64| ((gfn_base + (k * 7 + r * 131) % frames) << 12) | 1;
    let updates = first.len() as u64 * ROUNDS;

    let mut best_audit = Duration::MAX;
    let mut best_halves = Duration::MAX;
    let mut best_raw = Duration::MAX;
    let mut best_pin = Duration::MAX;
    let mut best_same = Duration::MAX;
    let mut mapped = 0u64;
    let mut same = 0u64;
    // Pins of the translation-only measurement: one per entry, like the GGTT's.
    let mut gmem2 = FakeGuestMemory::new(gfn_base, frames, 0x400_0000);
    let mut held: Vec<u64> = (0..first.len() as u64)
        .map(|k| (value(k, 5_000) >> 12) & 0xf_ffff_ffff)
        .collect();
    for &g in &held {
        gmem2.pin(g).expect("guest frame");
    }
    for rep in 0..REPEATS as u64 {
        let t = Instant::now();
        for r in 0..ROUNDS {
            for (k, &i) in first.iter().enumerate() {
                let v = value(k as u64, r + rep * ROUNDS);
                let out = ggtt.mmio_write(
                    &mut gmem,
                    &mut be,
                    &mut cpu,
                    GGTT_BAR0_BASE + i * 8,
                    &v.to_le_bytes(),
                );
                mapped += u64::from(out == Ok(PteWrite::Mapped));
            }
        }
        best_audit = best_audit.min(t.elapsed());

        // The same updates as two 4-byte halves (low, then high).
        let t = Instant::now();
        for r in 0..ROUNDS {
            for (k, &i) in first.iter().enumerate() {
                let v = value(k as u64, r + rep * ROUNDS + 1_000);
                let o = GGTT_BAR0_BASE + i * 8;
                let _ = ggtt.mmio_write(&mut gmem, &mut be, &mut cpu, o, &(v as u32).to_le_bytes());
                let out = ggtt.mmio_write(
                    &mut gmem,
                    &mut be,
                    &mut cpu,
                    o + 4,
                    &((v >> 32) as u32).to_le_bytes(),
                );
                mapped += u64::from(out == Ok(PteWrite::Mapped));
            }
        }
        best_halves = best_halves.min(t.elapsed());

        // Raw: the host value straight into the physical GGTT, no audit.
        let t = Instant::now();
        for r in 0..ROUNDS {
            for (k, &i) in first.iter().enumerate() {
                let v = value(k as u64, r + rep * ROUNDS);
                be.write_ggtt(black_box(i as u32), Pte(black_box(v)));
            }
        }
        best_raw = best_raw.min(t.elapsed());

        // The translation alone: pin the new frame, unpin the old one, on a
        // second guest memory holding as many pins as the shadow GGTT does.
        let t = Instant::now();
        for r in 0..ROUNDS {
            for k in 0..first.len() as u64 {
                let g = (value(k, r + rep * ROUNDS + 2_000) >> 12) & 0xf_ffff_ffff;
                let old = *held.get(k as usize).unwrap_or(&g);
                black_box(gmem2.pin(g).ok());
                gmem2.unpin(old);
                if let Some(h) = held.get_mut(k as usize) {
                    *h = g;
                }
            }
        }
        best_pin = best_pin.min(t.elapsed());

        // Audit without translation: rewrite every entry with the frame it
        // already maps (decode, slice check, audit, no pin, no physical write).
        let t = Instant::now();
        for _ in 0..ROUNDS {
            for &i in first.iter() {
                let o = GGTT_BAR0_BASE + i * 8;
                let v = ggtt.guest_entry(i);
                let out =
                    ggtt.mmio_write(&mut gmem, &mut be, &mut cpu, o, &black_box(v).to_le_bytes());
                same += u64::from(out == Ok(PteWrite::Mapped));
            }
        }
        best_same = best_same.min(t.elapsed());
    }
    assert_eq!(same, updates * REPEATS as u64);
    for g in held {
        gmem2.unpin(g);
    }
    assert_eq!(gmem2.outstanding_pins(), 0);
    assert_eq!(
        mapped,
        2 * updates * REPEATS as u64,
        "every benchmark write must be a real audited mapping"
    );
    let pins = gmem.outstanding_pins();
    ggtt.destroy(&mut gmem, &mut be, &mut cpu);
    assert_eq!(gmem.outstanding_pins(), 0);

    let rate = |d: Duration| updates as f64 / d.as_secs_f64();
    println!(
        "ggtt bench: {} entries in the vGPU's slices, {} updates per pass, best of {}",
        first.len(),
        updates,
        REPEATS
    );
    println!(
        "  audited 8-byte PTE write : {:>12.0} updates/s ({:.1} ns/update)",
        rate(best_audit),
        best_audit.as_nanos() as f64 / updates as f64
    );
    println!(
        "  audited 2 x 4-byte halves: {:>12.0} updates/s ({:.1} ns/update)",
        rate(best_halves),
        best_halves.as_nanos() as f64 / updates as f64
    );
    println!(
        "  raw physical GGTT write  : {:>12.0} updates/s ({:.1} ns/update)",
        rate(best_raw),
        best_raw.as_nanos() as f64 / updates as f64
    );
    println!(
        "  ratio audited / raw      : {:.1}x slower (halves: {:.1}x)",
        best_audit.as_secs_f64() / best_raw.as_secs_f64(),
        best_halves.as_secs_f64() / best_raw.as_secs_f64()
    );
    println!("  breakdown of an audited update:");
    println!(
        "    fake pin + unpin alone (FakeGuestMemory, BTreeMap): {:.1} ns ({:.0}% of it)",
        best_pin.as_nanos() as f64 / updates as f64,
        100.0 * best_pin.as_secs_f64() / best_audit.as_secs_f64()
    );
    println!(
        "    audit without translation (same-frame rewrite)    : {:.1} ns ({:.1}x raw)",
        best_same.as_nanos() as f64 / updates as f64,
        best_same.as_secs_f64() / best_raw.as_secs_f64()
    );
    println!("  pins held at the end: {} (released on destroy)", pins);
}
