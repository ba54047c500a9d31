//! gvt-core: the mediation core of gvt-rs (gVirt, USENIX ATC'14, sections 3.1–3.6).
//! The device it mediates is specified in `docs/gvt-sim.md`; where each file
//! sits in the house, the locks and the data paths are in `docs/architecture.md`.
//!
//! Everything here is `no_std`, allocation-free and free of `unsafe`: state lives
//! in borrowed slices and every side effect (guest memory, host pages, the
//! physical GPU, interrupts, the clock) goes through the small traits of
//! [`services`] (the kernel's side) and [`backend`] (the GPU's).  The crate is compiled twice from the same files:
//! by cargo on the host (unit, property and fuzz tests) and by Kbuild inside the
//! kernel module (`#[path = "../core/src/lib.rs"] mod gvt_core;` with
//! `--cfg gvt_kmod`).
//!
//! Rules that keep both builds working (checked by `cargo xtask lint-core`):
//! - refer to sibling modules with `super::`, never `crate::` (inside the
//!   module `crate` is the kernel module);
//! - Rust 1.85, edition 2021: the kernel's compiler;
//! - no `std`, no `alloc`, no `unsafe`, no panics on guest-controlled input
//!   (index with `get`, do arithmetic with `checked_*`/`wrapping_*`).
#![cfg_attr(not(gvt_kmod), no_std)]
#![forbid(unsafe_code)]
#![allow(clippy::new_without_default)]

#[cfg(all(test, not(gvt_kmod)))]
extern crate std;

pub mod aperture;
pub mod backend;
pub mod ggtt;
pub mod gm_view;
pub mod mem;
pub mod ppgtt;
pub mod services;

pub mod cfgspace;
pub mod mmio;
pub mod partition;
pub mod pvinfo;
pub mod regs;
pub mod vgpu;
pub mod vgpu_migrate;
pub mod vgpu_types;

pub mod ctx;
pub mod reset;
pub mod sched;
pub mod sched_policy;
pub mod stats;

pub mod cmd;
pub mod engine;
pub mod irq;
pub mod ring;
pub mod sim;

pub mod display;
pub mod edid;
pub mod gpu;
pub mod gpu_lock;
pub mod ratelimit;
pub mod vblank;

pub mod migration;

#[cfg(all(any(test, feature = "fakes"), not(gvt_kmod)))]
pub mod fakes;
