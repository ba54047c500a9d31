//! libgvtctl: the control plane of gvt-rs, usable with any VFIO mdev driver.
//!
//! - discover parents and types ([`Gvtctl::types`]), including GVT-format partitions;
//! - create a vGPU by type or by requested partition ([`Gvtctl::create`]), destroy it
//!   (refusing while a VMM holds it, [`Gvtctl::destroy`]);
//! - list instances with their partition, IOMMU group, VFIO node and holders;
//! - persistent definitions in mdevctl's format ([`defs`]): define, undefine, start,
//!   stop, autostart;
//! - live statistics from `gvt/stats` ([`stats`]: [`Gvtctl::sample`], [`Report`]);
//! - VMM arguments ([`vmm`]); sizes ([`size`]); errors that say what to do ([`Error`]);
//! - nothing read from `/proc`, `/sys` or `/etc/mdevctl.d` is trusted: holders are
//!   verified by device numbers ([`holders`]), definition attributes stay inside the
//!   device ([`Sysfs::write_attr`]), and text from there is escaped ([`escape`]).
//!
//! Every path is resolved under a root (`/` on a host), and every filesystem access goes
//! through [`Sysfs`], so tests run against a fake mdev sysfs tree ([`fake_sysfs`]); the
//! one exception is the list of processes and their command lines, which the `procfs`
//! crate reads from `<root>/proc` ([`holders`]).

pub mod ctl;
pub mod defs;
pub mod error;
pub mod escape;
pub mod fake_sysfs;
pub mod holders;
pub mod size;
pub mod stats;
pub mod sysfs;
pub mod types;
pub mod uuid;
pub mod vmm;

pub use ctl::{
    CreateRequest, DefineRequest, DisplayPath, Gvtctl, Instance, Migration, StartOutcome,
    StartStatus, DEFAULT_TIMEOUT,
};
pub use defs::{DamagedDefinition, Definition, StartMode};
pub use error::{exit, Error, ErrorDetails, ExistingInstance};
pub use holders::{Holder, PossibleHolder};
pub use size::{format_size, parse_size};
pub use stats::{Report, Sample};
pub use sysfs::{RealSysfs, Sysfs};
pub use types::{MdevType, Partition, PartitionRequest, TypeKind, TypeSummary};
pub use uuid::Uuid;
pub use vmm::{vmm_args, Vmm, VmmArgs};
