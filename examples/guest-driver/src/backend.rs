//! How the driver reaches the device: [`Backend`], gvt-core's
//! [`GuestBus`] (BAR0 accesses, CPU accesses through the aperture, guest
//! RAM by guest physical address) plus what a real environment adds —
//! which RAM pages the driver owns, enabling the device, interrupts.
//!
//! Two implementations: [`crate::vfio::VfioBackend`] (a VMM's view: the
//! device fd, the BAR2 sparse-mmap area, an anonymous buffer registered with
//! `VFIO_IOMMU_MAP_DMA` as guest RAM, MSI through an eventfd) and
//! [`crate::sysfs::SysfsBackend`] (a guest's view: `resource0`/`resource2`
//! of the PCI function, RAM pages found through `/proc/self/pagemap`,
//! interrupts by polling).

use std::time::Duration;

pub use gvt_guest::GuestBus;

use crate::error::Result;

/// What waiting for an interrupt gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqWait {
    /// The interrupt fired `n` times (an eventfd counter) since the last wait.
    Fired(u64),
    /// Nothing within the timeout.
    TimedOut,
    /// This backend cannot receive interrupts: poll the registers instead.
    Unsupported,
}

/// A device the reference driver can drive.
pub trait Backend: GuestBus {
    /// One line saying what this is (for logs and errors).
    fn describe(&self) -> String;
    /// The guest RAM pages the driver may use, as guest physical addresses
    /// (page aligned, distinct).  The driver backs graphics memory with them.
    fn ram_pages(&self) -> Vec<u64>;
    /// Memory decode and bus mastering on; interrupt delivery where the
    /// backend has it (MSI through an eventfd).
    fn enable(&mut self) -> Result<()>;
    /// Wait up to `timeout` for an interrupt.
    fn wait_irq(&mut self, timeout: Duration) -> Result<IrqWait>;
    /// Why the last [`GuestBus`] access returned false (taken once).
    fn take_error(&mut self) -> Option<String>;
}
