// SPDX-License-Identifier: GPL-2.0
//! The `vfio_device_ops` of a vGPU, and the file that implements each (the
//! C trampolines are in [`crate::vfio_dev`]).

use kernel::prelude::*;

use crate::mdev::MdevVgpu;
use crate::vfio;
use crate::vfio_dev::{DeviceVma, InfoCaps, VfioDeviceOps};
use crate::{ioctl, mmap, region};

#[vtable]
impl VfioDeviceOps for MdevVgpu {
    fn release(this: Pin<KBox<Self>>) {
        MdevVgpu::destroy(this);
    }
    fn open(&self) -> Result {
        self.open_device()
    }
    fn close(&self) {
        self.close_device();
    }
    // A trapped access is the hot path: inlined into the VFIO
    // trampoline, so the core's `read`/`write` makes one call into us.
    #[inline(always)]
    fn read(&self, ubuf: usize, count: usize, pos: &mut i64) -> isize {
        region::read(self, ubuf, count, pos)
    }
    #[inline(always)]
    fn write(&self, ubuf: usize, count: usize, pos: &mut i64) -> isize {
        region::write(self, ubuf, count, pos)
    }
    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        ioctl::ioctl(self, cmd, arg)
    }
    fn region_info(&self, info: &mut vfio::vfio_region_info, caps: &mut InfoCaps) -> Result {
        region::region_info(self, info, caps)
    }
    fn mmap(&self, vma: &DeviceVma<'_, Self>) -> Result {
        mmap::mmap(self, vma)
    }
    fn request(&self, count: u32) {
        self.request_release(count);
    }
    fn dma_unmap(&self, iova: u64, len: u64) {
        self.unmap_dma(iova, len);
    }
    fn mig_set_state(&self, new: u32) -> Result<Option<*mut kernel::bindings::file>> {
        MdevVgpu::mig_set_state(self, new)
    }
    fn mig_get_state(&self) -> u32 {
        MdevVgpu::mig_get_state(self)
    }
    fn mig_data_size(&self) -> usize {
        MdevVgpu::mig_data_size(self)
    }
}
