// SPDX-License-Identifier: GPL-2.0
//! gvt_rs: a mediated pass-through vGPU (VFIO mdev vendor driver) over gvt-sim.

use kernel::prelude::*;

#[path = "../core/src/lib.rs"]
#[allow(dead_code, unreachable_pub)]
mod gvt_core;

#[allow(non_camel_case_types, non_upper_case_globals, non_snake_case, dead_code, unreachable_pub)]
#[allow(clippy::all, unsafe_op_in_unsafe_fn, missing_docs)]
mod vfio {
    use kernel::bindings::*;
    use kernel::ffi;
    use pin_init::MaybeZeroable;
    include!("vfio_bindings_generated.rs");
}

module! {
    type: GvtRs,
    name: "gvt_rs",
    authors: ["gvt-rs developers"],
    description: "gvt-rs: mediated pass-through vGPU over the gvt-sim GPU",
    license: "GPL",
}

struct GvtRs;

impl kernel::Module for GvtRs {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("gvt_rs: loaded (vfio_device_ops is {} bytes)\n", core::mem::size_of::<vfio::vfio_device_ops>());
        Ok(GvtRs)
    }
}
