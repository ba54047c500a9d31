// SPDX-License-Identifier: GPL-2.0
//! gvt_rs: a mediated pass-through vGPU (a VFIO mdev vendor driver) over the
//! gvt-sim GPU.
//!
//! This crate is the thin kernel glue.  It owns every `unsafe` block of the
//! project and reads like a table from kernel callbacks to `gvt-core` calls:
//!
//! | kernel callback                     | glue                  | core                          |
//! |-------------------------------------|-----------------------|-------------------------------|
//! | every C callback (vfio ops, mdev probe/remove, type attributes) | [`vfio_dev`] (trampolines) -> [`ops`], [`parent`] | |
//! | module init / exit, PCI probe / remove (parents) | [`parent`] | `partition::Partitioner`, `vgpu_types` |
//! | mdev type `available_instances` / `description` | [`parent`] | `vgpu_types`            |
//! | mdev `probe` / `remove`, vfio `init` / `release` / `open` / `close` / `dma_unmap` | [`mdev`] | `vgpu::Vgpu::{create_in,destroy,reset,dma_unmap}` |
//! | vfio `read` / `write`, region info  | [`region`]            | `vgpu::Vgpu::{cfg,bar0}_*`, `edid::EdidRegion` |
//! | vfio `mmap` + page faults           | [`mmap`]              | (the physical GGTT, read under the GPU lock) |
//! | vfio `ioctl` (info, irqs, reset, `QUERY_GFX_PLANE`, `GET_GFX_DMABUF`) | [`ioctl`] | `vgpu::Vgpu::{reset,query_gfx_plane,framebuffer_pages}` |
//! | dma-buf buffers and their account   | [`dmabuf`]            | |
//! | what a trap leaves to do (signal, zap, kick, vblank) | [`effects`], `mdev::MdevVgpu::apply` | `vgpu::Signal` |
//! | engine worker, vblank timer, GPU lock as `GpuLock`, partitions, slots | [`shared`] | `gpu::Gpu::run_engines`, `gpu_lock` |
//! | pins refused while VFIO unmaps      | [`invalidate`]        | `services::GuestMemory` |
//! | sysfs `gvt/*`                       | [`sysfs`]             | partition, stats              |
//! | kernel services as safe calls (pages, eventfds, irqfds, work items, PFN mappings, dma-buf export, clock) | [`kapi`] | `HostMemory`, `HostPageAlloc`, `Clock` |
//!
//! Only [`vfio_dev`] and [`kapi`] call C (bindings and the shims of
//! `gvt_rs_helpers.c`); the rest calls their safe methods.  The lock table
//! (what each lock protects, the order, what may sleep under it) is in
//! [`mdev`]'s documentation.

use kernel::c_str;
use kernel::prelude::*;

// The core is a library with a public API of its own (host tests, the
// guest crate, the benches): what the module does not call of it is dead
// here, and its `pub` items are unreachable from this crate.  One re-export
// (`engine::RING_EIR`) is used only in patterns, which rustc 1.85 reports
// as an unused import.  Nothing else is allowed: the core is clippy-clean
// and documented on its own (`cargo xtask lint`).
#[path = "../core/src/lib.rs"]
#[allow(dead_code, unreachable_pub, unused_imports)]
mod gvt_core;

/// Module-local bindings for `linux/vfio.h`, `linux/mdev.h` and the C shims.
#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unreachable_pub
)]
#[allow(clippy::all, unsafe_op_in_unsafe_fn, missing_docs, improper_ctypes)]
mod vfio {
    use kernel::bindings::*;
    use kernel::ffi;
    use pin_init::MaybeZeroable;
    include!("vfio_bindings_generated.rs");
}

mod dmabuf;
mod effects;
mod invalidate;
mod ioctl;
mod kapi;
mod mdev;
mod mig_state;
mod migration;
mod mmap;
mod ops;
mod parent;
mod region;
mod shared;
mod sysfs;
mod vfio_dev;

module! {
    type: GvtRs,
    name: "gvt_rs",
    authors: ["gvt-rs developers"],
    description: "gvt-rs: mediated pass-through vGPU over the gvt-sim GPU",
    license: "GPL",
    // dma_buf_export / dma_buf_fd / dma_buf_put (dma-buf planes).
    imports_ns: ["DMA_BUF"],
    params: {
        aperture_mb: u32 {
            default: 512,
            description: "Mappable graphics memory (aperture, BAR2) of each gvt-sim parent in MiB (power of two, 16..=4096; 512 as a GVT-g host, whose largest type has 512 MB)",
        },
        gm_mb: u32 {
            default: 4096,
            description: "Total graphics memory (GGTT space) in MiB (aperture + non-mappable, <= 4096)",
        },
        fences: u32 {
            default: 16,
            description: "Fence registers of each parent (1..=16)",
        },
        max_vgpus: u32 {
            default: 8,
            description: "Most vGPUs that may exist at once on each parent (1..=64; 8 as GVT-g; above 8 the types of 16, 32 and 64 instances appear, and above 32 the host keeps 32 MiB of GM instead of 16)",
        },
        hang_threshold: u32 {
            default: 3,
            description: "Engine hangs a vGPU may cause before it is put in the failed state (1..=1000)",
        },
        dmabuf: u32 {
            default: 0,
            description: "Initial sysfs gvt/dmabuf of new vGPUs: 0 = display region only (any VMM display, also without OpenGL), 1 = also dma-buf planes (zero-copy; QEMU then requires an OpenGL display)",
        },
        bench_no_audit: u32 {
            default: 0,
            description: "BENCHMARK SWITCH, never for untrusted guests: 1 = submissions are not audited (commands still decoded and shadow-copied, no policy check: engine, register whitelist, addresses), to measure what the audit costs (the paper's gVirt_base vs gVirt_sec). Root sets it at load only; no guest can change it. Default 0: every command audited",
        },
        virtual_parent: bool {
            default: true,
            description: "Register the virtual parent gvt-sim0 (/sys/devices/virtual/gvt_rs/gvt-sim0) at load. PCI functions bound to the gvt_rs PCI driver by driver_override are parents as well, whatever this says",
        },
    },
}

/// The configuration of every parent: the module parameters.
pub(crate) fn parent_config() -> parent::ParentConfig {
    parent::ParentConfig {
        aperture_mb: module_parameters::aperture_mb.value(),
        gm_mb: module_parameters::gm_mb.value(),
        fences: module_parameters::fences.value(),
        max_vgpus: module_parameters::max_vgpus.value(),
        hang_threshold: module_parameters::hang_threshold.value(),
        dmabuf: module_parameters::dmabuf.value(),
        bench_no_audit: module_parameters::bench_no_audit.value(),
    }
}

/// The module: the mdev driver ([`parent::MDEV_DRIVER`], a `static`), the
/// virtual parent (unless `virtual_parent=0`) and the PCI driver whose
/// bound functions are parents.  Torn down in reverse: the PCI driver
/// first (every bound function's parent goes), then the virtual parent,
/// then the mdev driver.
struct GvtRs {
    pci: Option<Pin<KBox<kernel::driver::Registration<kernel::pci::Adapter<parent::PciParent>>>>>,
    virt: Option<parent::VirtualParent>,
}

impl kernel::Module for GvtRs {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let cfg = parent_config();
        parent::check_config(&cfg)?;
        parent::MDEV_DRIVER.register(module, cfg.max_vgpus)?;
        let virt = if module_parameters::virtual_parent.value() {
            match parent::VirtualParent::register(cfg) {
                Ok(v) => Some(v),
                Err(e) => {
                    parent::MDEV_DRIVER.unregister();
                    return Err(e);
                }
            }
        } else {
            None
        };
        // Binds every function whose driver_override says gvt_rs already.
        let pci = match KBox::pin_init(
            kernel::driver::Registration::new(c_str!("gvt_rs"), module),
            GFP_KERNEL,
        ) {
            Ok(r) => r,
            Err(e) => {
                drop(virt);
                parent::MDEV_DRIVER.unregister();
                return Err(e);
            }
        };
        Ok(GvtRs {
            pci: Some(pci),
            virt,
        })
    }
}

impl Drop for GvtRs {
    fn drop(&mut self) {
        drop(self.pci.take());
        drop(self.virt.take());
        parent::MDEV_DRIVER.unregister();
    }
}
