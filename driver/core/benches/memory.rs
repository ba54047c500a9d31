//! Host memory per vGPU and per parent (issue 18: "memory per vGPU measured
//! and minimized"), for every type of the default parent (512 MiB aperture,
//! 4 GiB GM, 16 fences) with `max_vgpus=64`.  Sizes are what the kernel
//! glue allocates for a vGPU ([`VgpuMemory`]: the sizes of the storage it
//! lends to the core, the shadow pages, the facade), printed next to what
//! the same vGPU held with the dense 2 MiB vreg file.  Nothing is timed.
use gvt_core::gpu::{host_reserved_size, Gpu};
use gvt_core::partition::{GmLayout, Partitioner};
use gvt_core::regs::REG_RANGE;
use gvt_core::vgpu::{VgpuMemory, DEFAULT_PPGTT_TABLES};
use gvt_core::vgpu_types::VgpuTypes;

const MIB: u64 = 1 << 20;

fn kib(b: u64) -> String {
    format!("{:.0} KiB", b as f64 / 1024.0)
}

fn main() {
    let gm = 4096 * MIB;
    let layout = GmLayout {
        aperture_size: 512 * MIB,
        total_gm: gm,
        fences: 16,
        host_reserved_high: host_reserved_size(64),
    };
    let types = VgpuTypes::derive(&layout, 64);
    println!(
        "bench: host memory per vGPU, default parent (aperture 512 MiB, GM 4 GiB), max_vgpus=64:"
    );
    for t in types.iter() {
        let mut p = Partitioner::<64>::new(layout).unwrap();
        let (_, part) = p.create(&t.request()).unwrap();
        let m = VgpuMemory::of::<DEFAULT_PPGTT_TABLES>(&part);
        let dense = m.total() - m.vregs + u64::from(REG_RANGE);
        println!(
            "bench:   {:>4} MiB type (x{:<2}): {:>8} (vregs {}, GGTT {}, PPGTT snapshot {}, shadow rings+batches {}, state {}); with the dense 2 MiB vreg file {}: {:.2}x less; x{} = {:.1} MiB (was {:.1} MiB)",
            t.low_gm_size / MIB,
            t.instances,
            kib(m.total()),
            kib(m.vregs),
            kib(m.ggtt),
            kib(m.ppgtt_snapshot),
            kib(m.shadow),
            kib(m.state),
            kib(dense),
            dense as f64 / m.total() as f64,
            t.instances,
            (m.total() * u64::from(t.instances)) as f64 / MIB as f64,
            (dense * u64::from(t.instances)) as f64 / MIB as f64,
        );
    }
    // The parent: the physical GGTT (8 bytes per GM page, whatever the
    // aperture), the mediated GPU's state (its slot arrays grow with the
    // slot count), the partitioner.  The aperture itself has no backing:
    // its GGTT entries point at guest pages or a vGPU's scratch page.
    let phys = (gm >> 12) * 8;
    let parent = |slots: &str, gpu: usize, part: usize| {
        println!(
            "bench:   parent, {slots}: {} (physical GGTT {}, GPU state {}, partitioner {})",
            kib(phys + gpu as u64 + part as u64),
            kib(phys),
            kib(gpu as u64),
            kib(part as u64)
        );
    };
    println!("bench: host memory per parent (GM 4 GiB; the aperture size costs none):");
    parent(
        "8 slots (before)",
        core::mem::size_of::<Gpu<8>>(),
        core::mem::size_of::<Partitioner<8>>(),
    );
    parent(
        "64 slots (now)",
        core::mem::size_of::<Gpu<64>>(),
        core::mem::size_of::<Partitioner<64>>(),
    );
}
