//! Emulated PCI configuration space of a vGPU (paper §3.3: the vGPU is a
//! complete, emulated PCI device; docs/gvt-sim.md §1 "The PCI function").
//!
//! 256 bytes, conventional PCI (type-0 header, no PCI Express capability).  The
//! 4 KiB extended space is **not** exposed: the VFIO config region is 256
//! bytes and accesses beyond it are refused ([`CfgError::OutOfRange`]), so a
//! VMM sees a conventional device with no extended capability list.
//!
//! | offset | field | value | guest-writable |
//! |---|---|---|---|
//! | 0x00 | vendor / device | 0x1234 / 0x6776 | no |
//! | 0x04 | command | 0 | IO (0), MEM (1), bus master (2), INTx disable (10) |
//! | 0x06 | status | capability list (bit 4); interrupt status (bit 3) set by the glue | no |
//! | 0x08 | revision, class | 0x01, 0x038000 (display, other) | no |
//! | 0x0C | cache line size | 0 | yes (plain storage, as on real devices) |
//! | 0x0E | header type | 0x00 | no |
//! | 0x10 | BAR0 | 64-bit non-prefetchable memory, 16 MiB (registers, PVINFO, GGTT view) | address bits |
//! | 0x18 | BAR2 | 64-bit prefetchable memory, the aperture (power of two) | address bits |
//! | 0x20–0x27, 0x30 | BAR4/5, expansion ROM | 0 (absent) | no |
//! | 0x2C | subsystem vendor / id | 0x1234 / 0x6776 | no |
//! | 0x34 | capability pointer | 0x40 | no |
//! | 0x3C | interrupt line | 0 | yes (plain storage) |
//! | 0x3D | interrupt pin | 1 (INTA) | no |
//! | 0x40 | MSI capability | 1 vector, 64-bit address | enable, address, data |
//!
//! BAR sizing works as on hardware: writing all-ones to a BAR half and
//! reading it back yields the size mask of that half (the writable bits are
//! exactly the address bits above the BAR's size).  The MSI "multiple message
//! enable" field stays 0 (one vector).
//!
//! ## The ID pair
//! 0x1234:0x6776 ("gv").  Vendor 0x1234 is the id QEMU uses for its emulated
//! devices; the only in-tree Linux match on vendor 0x1234 is `bochs`
//! (`drivers/gpu/drm/tiny/bochs.c`, device 0x1111), and no in-tree driver
//! matches class 0x0380 with a wildcard vendor except for vendors 0x1002
//! (amdgpu) and 0x1b36 (qxl).  Checked in the Linux 7.3 tree with
//! `grep -rn '0x1234' --include=*.c drivers sound` (device-id tables),
//! `grep -rni '0x6776' drivers include sound` (no hit),
//! `grep -rn PCI_CLASS_DISPLAY_OTHER --include=*.c .` and
//! `grep -rn 'PCI_BASE_CLASS_DISPLAY << 16' --include=*.c .` (class matches
//! all pin a vendor: ast, nouveau, tdfxfb, gx1fb).  So no guest driver
//! binds the vGPU by accident; the gvt-rs guest tests drive it from user space
//! (VFIO) or with their own driver.
//!
//! Every access is 1, 2 or 4 bytes, naturally aligned, inside the 256 bytes —
//! otherwise a [`CfgError`].  Read-only bits never change (a property test
//! writes arbitrary sequences).  Writes that change the command register or
//! the MSI enable/address/data return a [`CfgEvent`] so the glue can react
//! (switch INTx/MSI, map BARs).

/// Size of the emulated configuration space.
pub const CFG_SIZE: usize = 256;

pub const VENDOR_ID: u16 = 0x1234;
pub const DEVICE_ID: u16 = 0x6776;
pub const SUBSYSTEM_VENDOR_ID: u16 = VENDOR_ID;
pub const SUBSYSTEM_ID: u16 = DEVICE_ID;
pub const REVISION: u8 = 0x01;
/// Display controller, other (`PCI_CLASS_DISPLAY_OTHER << 8`).
pub const CLASS_CODE: u32 = 0x03_8000;
/// Size of BAR0 (see [`super::mmio::BAR0_SIZE`]).
pub const BAR0_SIZE: u64 = super::mmio::BAR0_SIZE;

/// Offsets in the configuration space.
pub mod off {
    pub const VENDOR_ID: usize = 0x00;
    pub const DEVICE_ID: usize = 0x02;
    pub const COMMAND: usize = 0x04;
    pub const STATUS: usize = 0x06;
    pub const REVISION: usize = 0x08;
    pub const CLASS_PROG: usize = 0x09;
    pub const CACHE_LINE_SIZE: usize = 0x0C;
    pub const HEADER_TYPE: usize = 0x0E;
    pub const BAR0: usize = 0x10;
    pub const BAR2: usize = 0x18;
    pub const BAR4: usize = 0x20;
    pub const SUBSYSTEM_VENDOR_ID: usize = 0x2C;
    pub const SUBSYSTEM_ID: usize = 0x2E;
    pub const ROM: usize = 0x30;
    pub const CAP_PTR: usize = 0x34;
    pub const INTERRUPT_LINE: usize = 0x3C;
    pub const INTERRUPT_PIN: usize = 0x3D;
    /// The MSI capability.
    pub const MSI: usize = 0x40;
    pub const MSI_CTRL: usize = MSI + 2;
    pub const MSI_ADDR_LO: usize = MSI + 4;
    pub const MSI_ADDR_HI: usize = MSI + 8;
    pub const MSI_DATA: usize = MSI + 12;
}

/// Command register bits.
pub mod cmd {
    pub const IO: u16 = 1 << 0;
    pub const MEMORY: u16 = 1 << 1;
    pub const BUS_MASTER: u16 = 1 << 2;
    pub const INTX_DISABLE: u16 = 1 << 10;
    /// The bits a guest may change.
    pub const WRITABLE: u16 = IO | MEMORY | BUS_MASTER | INTX_DISABLE;
}

/// Status register bits.
pub mod status {
    pub const INTERRUPT: u16 = 1 << 3;
    pub const CAP_LIST: u16 = 1 << 4;
}

/// MSI message control bits.
pub mod msi {
    pub const CAP_ID: u8 = 0x05;
    pub const ENABLE: u16 = 1 << 0;
    /// Multiple message capable: 0 = 1 vector.
    pub const MMC_MASK: u16 = 0x7 << 1;
    /// Multiple message enable: stays 0.
    pub const MME_MASK: u16 = 0x7 << 4;
    pub const ADDR_64: u16 = 1 << 7;
}

/// BAR type bits.
const BAR_MEM_64: u32 = 0x4;
const BAR_PREFETCH: u32 = 0x8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CfgError {
    /// Size not 1, 2 or 4.
    BadSize,
    /// Not naturally aligned.
    Misaligned,
    /// Beyond the 256 bytes.
    OutOfRange,
    /// Aperture size not a power of two of at least 4 KiB.
    BadAperture,
}

/// The MSI configuration the guest programmed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiConfig {
    pub enabled: bool,
    pub address: u64,
    pub data: u16,
}

/// A configuration write the glue must react to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CfgEvent {
    /// The command register changed.
    Command { old: u16, new: u16 },
    /// MSI enable, address or data changed; the new configuration.
    Msi(MsiConfig),
}

/// One vGPU's configuration space: contents plus a per-byte writable mask
/// (the QEMU `wmask` scheme: a written byte keeps its read-only bits).
#[derive(Clone, Debug)]
pub struct CfgSpace {
    data: [u8; CFG_SIZE],
    wmask: [u8; CFG_SIZE],
    aperture_size: u64,
}

fn put(buf: &mut [u8; CFG_SIZE], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

impl CfgSpace {
    /// The configuration space of a vGPU whose BAR2 (aperture) is
    /// `aperture_size` bytes (a power of two, at least 4 KiB).
    pub fn new(aperture_size: u64) -> Result<Self, CfgError> {
        if !aperture_size.is_power_of_two() || aperture_size < 4096 {
            return Err(CfgError::BadAperture);
        }
        let mut s = Self {
            data: [0; CFG_SIZE],
            wmask: [0; CFG_SIZE],
            aperture_size,
        };
        s.reset();
        Ok(s)
    }

    /// Power-on state (also on a VFIO device reset).
    pub fn reset(&mut self) {
        let (d, w) = (&mut self.data, &mut self.wmask);
        *d = [0; CFG_SIZE];
        *w = [0; CFG_SIZE];
        put(d, off::VENDOR_ID, &VENDOR_ID.to_le_bytes());
        put(d, off::DEVICE_ID, &DEVICE_ID.to_le_bytes());
        put(w, off::COMMAND, &cmd::WRITABLE.to_le_bytes());
        put(d, off::STATUS, &status::CAP_LIST.to_le_bytes());
        put(d, off::REVISION, &[REVISION]);
        put(d, off::CLASS_PROG, &CLASS_CODE.to_le_bytes()[..3]);
        put(w, off::CACHE_LINE_SIZE, &[0xFF]);
        for (at, size, flags) in [
            (off::BAR0, BAR0_SIZE, BAR_MEM_64),
            (off::BAR2, self.aperture_size, BAR_MEM_64 | BAR_PREFETCH),
        ] {
            let mask = !(size - 1);
            put(d, at, &flags.to_le_bytes());
            put(w, at, &((mask as u32) & !0xF).to_le_bytes());
            put(w, at + 4, &((mask >> 32) as u32).to_le_bytes());
        }
        put(
            d,
            off::SUBSYSTEM_VENDOR_ID,
            &SUBSYSTEM_VENDOR_ID.to_le_bytes(),
        );
        put(d, off::SUBSYSTEM_ID, &SUBSYSTEM_ID.to_le_bytes());
        put(d, off::CAP_PTR, &[off::MSI as u8]);
        put(w, off::INTERRUPT_LINE, &[0xFF]);
        put(d, off::INTERRUPT_PIN, &[1]);
        // MSI: id, next = 0, control: 64-bit, 1 vector
        put(d, off::MSI, &[msi::CAP_ID, 0]);
        put(d, off::MSI_CTRL, &msi::ADDR_64.to_le_bytes());
        put(w, off::MSI_CTRL, &msi::ENABLE.to_le_bytes());
        put(w, off::MSI_ADDR_LO, &0xFFFF_FFFCu32.to_le_bytes());
        put(w, off::MSI_ADDR_HI, &0xFFFF_FFFFu32.to_le_bytes());
        put(w, off::MSI_DATA, &0xFFFFu16.to_le_bytes());
    }

    fn check(offset: u32, size: u32) -> Result<usize, CfgError> {
        if !matches!(size, 1 | 2 | 4) {
            return Err(CfgError::BadSize);
        }
        // A power of two (checked above): a mask, not a division (a helper
        // call under TCG, where the rig's L1 runs).
        if offset & (size - 1) != 0 {
            return Err(CfgError::Misaligned);
        }
        match offset.checked_add(size) {
            Some(end) if end as usize <= CFG_SIZE => Ok(offset as usize),
            _ => Err(CfgError::OutOfRange),
        }
    }

    /// The `n` (1, 2 or 4) bytes at `at`, little-endian; 0 outside.  One
    /// load of the width, not a variable-length copy (a `memcpy` call).
    #[inline]
    fn get(&self, at: usize, n: usize) -> u32 {
        match (n, self.data.get(at..)) {
            (1, Some(&[a, ..])) => u32::from(a),
            (2, Some(&[a, b, ..])) => u32::from(u16::from_le_bytes([a, b])),
            (4, Some(&[a, b, c, d, ..])) => u32::from_le_bytes([a, b, c, d]),
            _ => 0,
        }
    }

    fn u16_at(&self, at: usize) -> u16 {
        self.get(at, 2) as u16
    }

    /// A guest read of `size` bytes at `offset`.
    pub fn read(&self, offset: u32, size: u32) -> Result<u32, CfgError> {
        let at = Self::check(offset, size)?;
        Ok(self.get(at, size as usize))
    }

    /// A guest write of the low `size` bytes of `value` at `offset`.
    pub fn write(
        &mut self,
        offset: u32,
        size: u32,
        value: u32,
    ) -> Result<Option<CfgEvent>, CfgError> {
        let at = Self::check(offset, size)?;
        let old_cmd = self.command();
        let old_msi = self.msi();
        let bytes = value.to_le_bytes();
        for (i, b) in bytes.iter().take(size as usize).enumerate() {
            if let (Some(d), Some(w)) = (self.data.get_mut(at + i), self.wmask.get(at + i)) {
                *d = (*d & !*w) | (*b & *w);
            }
        }
        let new_cmd = self.command();
        if new_cmd != old_cmd {
            return Ok(Some(CfgEvent::Command {
                old: old_cmd,
                new: new_cmd,
            }));
        }
        let new_msi = self.msi();
        if new_msi != old_msi {
            return Ok(Some(CfgEvent::Msi(new_msi)));
        }
        Ok(None)
    }

    /// [`read`](Self::read) into a little-endian buffer of 1, 2 or 4 bytes.
    pub fn read_bytes(&self, offset: u32, buf: &mut [u8]) -> Result<(), CfgError> {
        let size = u32::try_from(buf.len()).map_err(|_| CfgError::BadSize)?;
        let v = self.read(offset, size)?.to_le_bytes();
        match buf {
            [a] => *a = v[0],
            [a, b] => [*a, *b] = [v[0], v[1]],
            [_, _, _, _] => buf.copy_from_slice(&v),
            _ => {}
        }
        Ok(())
    }

    /// [`write`](Self::write) from a little-endian buffer of 1, 2 or 4 bytes.
    pub fn write_bytes(&mut self, offset: u32, buf: &[u8]) -> Result<Option<CfgEvent>, CfgError> {
        let size = u32::try_from(buf.len()).map_err(|_| CfgError::BadSize)?;
        if size > 4 {
            return Err(CfgError::BadSize);
        }
        let mut v = [0u8; 4];
        for (d, s) in v.iter_mut().zip(buf.iter()) {
            *d = *s;
        }
        self.write(offset, size, u32::from_le_bytes(v))
    }

    pub fn command(&self) -> u16 {
        self.u16_at(off::COMMAND)
    }
    pub fn memory_enabled(&self) -> bool {
        self.command() & cmd::MEMORY != 0
    }
    pub fn bus_master(&self) -> bool {
        self.command() & cmd::BUS_MASTER != 0
    }
    pub fn intx_disabled(&self) -> bool {
        self.command() & cmd::INTX_DISABLE != 0
    }

    /// Reflect the INTx line in the status register's interrupt bit (the
    /// glue calls this when it asserts or deasserts INTx).
    pub fn set_interrupt_status(&mut self, pending: bool) {
        let s = self.u16_at(off::STATUS);
        let s = if pending {
            s | status::INTERRUPT
        } else {
            s & !status::INTERRUPT
        };
        put(&mut self.data, off::STATUS, &s.to_le_bytes());
    }

    pub fn msi(&self) -> MsiConfig {
        MsiConfig {
            enabled: self.u16_at(off::MSI_CTRL) & msi::ENABLE != 0,
            address: (self.get(off::MSI_ADDR_LO, 4) as u64)
                | ((self.get(off::MSI_ADDR_HI, 4) as u64) << 32),
            data: self.u16_at(off::MSI_DATA),
        }
    }

    fn bar(&self, at: usize) -> u64 {
        ((self.get(at, 4) as u64) | ((self.get(at + 4, 4) as u64) << 32)) & !0xF
    }
    /// The guest-programmed BAR0 address.
    pub fn bar0(&self) -> u64 {
        self.bar(off::BAR0)
    }
    /// The guest-programmed BAR2 (aperture) address.
    pub fn bar2(&self) -> u64 {
        self.bar(off::BAR2)
    }
    pub fn aperture_size(&self) -> u64 {
        self.aperture_size
    }
    /// The raw 256 bytes (for dumps).
    pub fn as_bytes(&self) -> &[u8; CFG_SIZE] {
        &self.data
    }
    /// Whether bit `bit` of byte `at` may be changed by the guest.
    pub fn writable_bits(&self, at: usize) -> u8 {
        self.wmask.get(at).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> CfgSpace {
        CfgSpace::new(64 << 20).unwrap()
    }

    #[test]
    fn identity() {
        let c = cfg();
        assert_eq!(c.read(0, 4), Ok(0x6776_1234));
        assert_eq!(c.read(0, 2), Ok(0x1234));
        assert_eq!(c.read(8, 4), Ok(0x0380_0001));
        assert_eq!(c.read(0x0E, 1), Ok(0));
        assert_eq!(c.read(0x2C, 4), Ok(0x6776_1234));
        assert_eq!(c.read(0x06, 2), Ok(status::CAP_LIST as u32));
        assert_eq!(c.read(0x34, 1), Ok(0x40));
        assert_eq!(c.read(0x3D, 1), Ok(1), "INTA");
        assert_eq!(c.read(0x40, 2), Ok(0x0005), "MSI, last capability");
        assert_eq!(
            c.read(0x42, 2),
            Ok(msi::ADDR_64 as u32),
            "64-bit, 1 vector, disabled"
        );
        assert_eq!(c.read(0x20, 4), Ok(0));
        assert_eq!(c.read(0x30, 4), Ok(0));
        assert_eq!(c.read(0x10, 4), Ok(0x4));
        assert_eq!(c.read(0x18, 4), Ok(0xC));
    }

    #[test]
    fn bad_accesses() {
        let mut c = cfg();
        assert_eq!(c.read(0, 3), Err(CfgError::BadSize));
        assert_eq!(c.read(0, 8), Err(CfgError::BadSize));
        assert_eq!(c.read(0, 0), Err(CfgError::BadSize));
        assert_eq!(c.read(2, 4), Err(CfgError::Misaligned));
        assert_eq!(c.write(1, 2, 0), Err(CfgError::Misaligned));
        assert_eq!(c.read(256, 1), Err(CfgError::OutOfRange));
        assert_eq!(
            c.read(0x100, 4),
            Err(CfgError::OutOfRange),
            "no extended space"
        );
        assert_eq!(c.write(u32::MAX, 1, 0), Err(CfgError::OutOfRange));
        assert_eq!(c.read(252, 4), Ok(0));
        assert_eq!(c.write_bytes(0, &[0; 5]), Err(CfgError::BadSize));
        assert_eq!(c.read_bytes(0, &mut [0; 3]), Err(CfgError::BadSize));
        for a in [0u64, 1, 4095, 3 << 20, u64::MAX] {
            assert_eq!(CfgSpace::new(a).err(), Some(CfgError::BadAperture), "{a}");
        }
    }

    #[test]
    fn read_only_fields_stay() {
        let mut c = cfg();
        for at in [0u32, 8, 0x0C, 0x20, 0x24, 0x28, 0x2C, 0x30, 0x34, 0x38] {
            let before = c.read(at, 4).unwrap();
            c.write(at, 4, 0xFFFF_FFFF).unwrap();
            let after = c.read(at, 4).unwrap();
            if at == 0x0C {
                assert_eq!(
                    after,
                    before | 0xFF,
                    "only the cache line size byte is writable"
                );
            } else {
                assert_eq!(after, before, "{at:#x}");
            }
        }
        assert_eq!(c.write(0x06, 2, 0xFFFF), Ok(None));
        assert_eq!(c.read(0x06, 2), Ok(status::CAP_LIST as u32));
        c.write(0x3C, 4, 0xFFFF_FFFF).unwrap();
        assert_eq!(c.read(0x3C, 4), Ok(0x1FF), "line writable, pin INTA");
    }

    #[test]
    fn command_register() {
        let mut c = cfg();
        assert_eq!(
            c.write(4, 2, 0xFFFF),
            Ok(Some(CfgEvent::Command {
                old: 0,
                new: cmd::WRITABLE
            }))
        );
        assert!(c.memory_enabled() && c.bus_master() && c.intx_disabled());
        assert_eq!(c.write(4, 2, 0xFFFF), Ok(None), "no change, no event");
        assert_eq!(
            c.write(5, 1, 0),
            Ok(Some(CfgEvent::Command {
                old: cmd::WRITABLE,
                new: 0x7
            }))
        );
        assert!(!c.intx_disabled());
        // a dword write to command+status: status untouched
        c.write(4, 4, 0xFFFF_0002).unwrap();
        assert_eq!(c.read(4, 4), Ok(((status::CAP_LIST as u32) << 16) | 2));
        c.set_interrupt_status(true);
        assert_eq!(
            c.read(6, 2),
            Ok((status::CAP_LIST | status::INTERRUPT) as u32)
        );
        c.set_interrupt_status(false);
        assert_eq!(c.read(6, 2), Ok(status::CAP_LIST as u32));
    }

    fn bar_size(c: &mut CfgSpace, at: u32) -> u64 {
        let (lo0, hi0) = (c.read(at, 4).unwrap(), c.read(at + 4, 4).unwrap());
        c.write(at, 4, 0xFFFF_FFFF).unwrap();
        c.write(at + 4, 4, 0xFFFF_FFFF).unwrap();
        let mask =
            (c.read(at, 4).unwrap() as u64 & !0xF) | ((c.read(at + 4, 4).unwrap() as u64) << 32);
        c.write(at, 4, lo0).unwrap();
        c.write(at + 4, 4, hi0).unwrap();
        (!mask).wrapping_add(1)
    }

    #[test]
    fn bar_sizing() {
        let mut c = cfg();
        c.write(0x10, 4, 0xFFFF_FFFF).unwrap();
        assert_eq!(c.read(0x10, 4), Ok(0xFF00_0004), "16 MiB, 64-bit memory");
        c.write(0x14, 4, 0xFFFF_FFFF).unwrap();
        assert_eq!(c.read(0x14, 4), Ok(0xFFFF_FFFF));
        assert_eq!(bar_size(&mut c, 0x10), 16 << 20);
        assert_eq!(bar_size(&mut c, 0x18), 64 << 20);
        assert_eq!(c.read(0x18, 4).unwrap() & 0xF, 0xC, "prefetchable 64-bit");
        // program addresses
        c.write(0x10, 4, 0xE100_0000).unwrap();
        c.write(0x14, 4, 0x1).unwrap();
        assert_eq!(c.bar0(), 0x1_E100_0000);
        c.write(0x18, 4, 0xC123_4567).unwrap();
        assert_eq!(
            c.bar2(),
            0xC000_0000,
            "address bits below the size are read-only"
        );
        // sub-dword writes keep the flags
        c.write(0x18, 1, 0xFF).unwrap();
        assert_eq!(c.read(0x18, 1), Ok(0x0C));
        // a big aperture: the low half has no address bits
        let mut big = CfgSpace::new(8 << 30).unwrap();
        big.write(0x18, 4, 0xFFFF_FFFF).unwrap();
        assert_eq!(big.read(0x18, 4), Ok(0xC));
        big.write(0x1C, 4, 0xFFFF_FFFF).unwrap();
        assert_eq!(big.read(0x1C, 4), Ok(0xFFFF_FFFE));
        assert_eq!(bar_size(&mut big, 0x18), 8 << 30);
        // BAR4/5 absent
        c.write(0x20, 4, 0xFFFF_FFFF).unwrap();
        assert_eq!(c.read(0x20, 4), Ok(0));
    }

    #[test]
    fn msi_capability() {
        let mut c = cfg();
        assert_eq!(
            c.write(0x44, 4, 0xFEE0_1003),
            Ok(Some(CfgEvent::Msi(MsiConfig {
                enabled: false,
                address: 0xFEE0_1000,
                data: 0
            })))
        );
        assert_eq!(c.write(0x48, 4, 0), Ok(None), "unchanged");
        assert_eq!(
            c.write(0x4C, 2, 0x4041),
            Ok(Some(CfgEvent::Msi(MsiConfig {
                enabled: false,
                address: 0xFEE0_1000,
                data: 0x4041
            })))
        );
        assert_eq!(
            c.write(0x4E, 2, 0xFFFF),
            Ok(None),
            "extended message data not supported"
        );
        assert_eq!(c.read(0x4C, 4), Ok(0x4041));
        // enable, try to enable 32 vectors and per-vector masking
        assert_eq!(
            c.write(0x42, 2, 0xFFFF),
            Ok(Some(CfgEvent::Msi(MsiConfig {
                enabled: true,
                address: 0xFEE0_1000,
                data: 0x4041
            })))
        );
        assert_eq!(
            c.read(0x42, 2),
            Ok((msi::ADDR_64 | msi::ENABLE) as u32),
            "MME stays 0"
        );
        assert!(c.msi().enabled);
        assert_eq!(c.read(0x40, 2), Ok(0x0005), "id/next read-only");
        c.reset();
        assert_eq!(c.msi(), MsiConfig::default());
    }

    #[test]
    fn byte_buffers() {
        let mut c = cfg();
        let mut b = [0u8; 2];
        c.read_bytes(0, &mut b).unwrap();
        assert_eq!(b, [0x34, 0x12]);
        assert_eq!(
            c.write_bytes(4, &[2]),
            Ok(Some(CfgEvent::Command { old: 0, new: 2 }))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_writes_keep_read_only_bits(ws in proptest::collection::vec(
            (prop_oneof![0u32..0x60, 0u32..300, any::<u32>()], prop_oneof![Just(1u32), Just(2), Just(4), 0u32..9], any::<u32>()),
            0..200), aperture_log2 in 12u32..40) {
            let mut c = CfgSpace::new(1 << aperture_log2).unwrap();
            let init = *c.as_bytes();
            for (o, s, v) in ws {
                let _ = c.write(o, s, v);
                let _ = c.read(o, s);
            }
            for (i, (now, was)) in c.as_bytes().iter().zip(init.iter()).enumerate() {
                let ro = !c.writable_bits(i);
                prop_assert_eq!(now & ro, was & ro, "byte {:#x}", i);
            }
            prop_assert_eq!(c.read(0x42, 2).unwrap() as u16 & (msi::MME_MASK | msi::MMC_MASK), 0);
            prop_assert_eq!(c.read(0, 4), Ok(0x6776_1234));
        }
    }
}
