//! The gvt_rs vGPU through a real VFIO consumer: rust-vmm's `vfio-ioctls`
//! (no default features) used the way cloud-hypervisor uses it — type1
//! container, group, device by its mdev sysfs path, region info with
//! capabilities, mmap of the sparse areas, MSI through an eventfd — plus raw
//! `pread`/`pwrite`/`ioctl` on the same device fd for the errno of every bad
//! case (`vfio-ioctls` logs and swallows those).

use std::thread;
use std::time::Duration;

use gvt_vmtests::gvt::*;
use gvt_vmtests::Mdev;
use vfio_bindings::bindings::vfio::*;
use vfio_ioctls::{VfioDevice, VfioRegionInfoCap, VfioRegionSparseMmapArea};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const CFG: u32 = VFIO_PCI_CONFIG_REGION_INDEX;
const BAR0: u32 = VFIO_PCI_BAR0_REGION_INDEX;
const BAR2: u32 = VFIO_PCI_BAR2_REGION_INDEX;

fn vgpu(mb: u64) -> Mdev {
    Mdev::create(PARENT, &type_mb(mb)).expect("create vGPU")
}

fn sparse_areas(dev: &VfioDevice, index: u32) -> Vec<VfioRegionSparseMmapArea> {
    dev.get_region_caps(index)
        .into_iter()
        .filter_map(|c| match c {
            VfioRegionInfoCap::SparseMmap(s) => Some(s.areas),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
#[ignore = "runs inside the VM rig"]
fn vfio_device_region_and_irq_info() {
    let m = vgpu(32);
    let a = attrs(&m);
    let dev = open(&m);

    let mut info = vfio_device_info {
        argsz: std::mem::size_of::<vfio_device_info>() as u32,
        cap_offset: 77,
        ..Default::default()
    };
    ioctl(&dev, VFIO_DEVICE_GET_INFO, &mut info).expect("GET_INFO");
    assert_eq!(info.cap_offset, 0, "no device capabilities");
    assert_eq!(
        info.flags,
        VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET,
        "device flags"
    );
    assert_eq!(
        info.num_regions,
        VFIO_PCI_NUM_REGIONS + 2,
        "PCI regions, then EDID and display (tests/vm/tests/display.rs)"
    );
    assert_eq!(info.num_irqs, VFIO_PCI_NUM_IRQS);

    let rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    assert_eq!(
        (dev.get_region_size(CFG), dev.get_region_flags(CFG)),
        (256, rw),
        "config region"
    );
    assert_eq!(
        (dev.get_region_size(BAR0), dev.get_region_flags(BAR0)),
        (BAR0_SIZE, rw),
        "BAR0: trapped, no mmap"
    );
    assert_eq!(
        (dev.get_region_size(BAR2), dev.get_region_flags(BAR2)),
        (
            APERTURE,
            rw | VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS
        ),
        "BAR2: the whole parent aperture"
    );
    assert_eq!(
        sparse_areas(&dev, BAR2),
        [VfioRegionSparseMmapArea {
            offset: a.ap_base,
            size: a.ap_size
        }],
        "only this vGPU's slice is mappable"
    );
    for i in [
        1,
        3,
        4,
        5,
        VFIO_PCI_ROM_REGION_INDEX,
        VFIO_PCI_VGA_REGION_INDEX,
    ] {
        assert_eq!(
            (dev.get_region_size(i), dev.get_region_flags(i)),
            (0, 0),
            "region {i} is absent"
        );
    }
    for i in 0..VFIO_PCI_NUM_REGIONS {
        assert_eq!(dev.get_region_offset(i), region_off(i), "region {i} offset");
        if i != BAR2 {
            assert!(
                dev.get_region_caps(i).is_empty(),
                "region {i} has no capabilities"
            );
        }
    }

    let irq = |i| {
        dev.get_irq_info(i)
            .copied()
            .unwrap_or_else(|| panic!("irq info {i}"))
    };
    let ev = VFIO_IRQ_INFO_EVENTFD;
    assert_eq!(
        (
            irq(VFIO_PCI_INTX_IRQ_INDEX).count,
            irq(VFIO_PCI_INTX_IRQ_INDEX).flags
        ),
        (1, ev | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED)
    );
    assert_eq!(
        (
            irq(VFIO_PCI_MSI_IRQ_INDEX).count,
            irq(VFIO_PCI_MSI_IRQ_INDEX).flags
        ),
        (1, ev | VFIO_IRQ_INFO_NORESIZE)
    );
    assert_eq!(irq(VFIO_PCI_MSIX_IRQ_INDEX).count, 0, "no MSI-X");
    assert_eq!(
        (
            irq(VFIO_PCI_ERR_IRQ_INDEX).count,
            irq(VFIO_PCI_ERR_IRQ_INDEX).flags
        ),
        (1, ev | VFIO_IRQ_INFO_NORESIZE),
        "ERR: one vector (QEMU enables its error recovery only with count 1)"
    );
    assert_eq!(irq(VFIO_PCI_REQ_IRQ_INDEX).count, 1, "REQ");
    assert_eq!(dev.max_interrupts(), 1);
}

#[test]
#[ignore = "runs inside the VM rig"]
fn vfio_config_space_ids_bars_command_msi() {
    let m = vgpu(32);
    let dev = open(&m);
    let mut cfg = [0u8; 256];
    assert_eq!(
        pread(&dev, CFG, 0, &mut cfg).expect("read the whole config space in one pread"),
        256
    );
    let r16 = |o: usize| u16::from_le_bytes([cfg[o], cfg[o + 1]]);
    let r32 = |o: usize| u32::from_le_bytes([cfg[o], cfg[o + 1], cfg[o + 2], cfg[o + 3]]);
    assert_eq!((r16(0), r16(2)), (VENDOR, DEVICE), "vendor/device");
    assert_eq!(r32(8) >> 8, 0x03_8000, "class: display controller, other");
    assert_eq!((r16(0x2C), r16(0x2E)), (VENDOR, DEVICE), "subsystem ids");
    assert_eq!(cfg[0x0E], 0, "type-0 header, single function");
    assert_eq!(r16(4), 0, "command register off after open (reset)");
    assert_ne!(r16(6) & (1 << 4), 0, "status: capability list");
    assert_eq!(cfg[0x3D], 1, "interrupt pin INTA");
    assert_eq!(
        r32(0x10) & 0xF,
        0x4,
        "BAR0: 64-bit, non-prefetchable memory"
    );
    assert_eq!(r32(0x18) & 0xF, 0xC, "BAR2: 64-bit, prefetchable memory");
    assert_eq!(cfg[0x34], 0x40, "capability pointer");
    assert_eq!(
        (cfg[0x40], cfg[0x41]),
        (0x05, 0),
        "MSI capability, last in the list"
    );
    assert_eq!(
        r16(0x42),
        1 << 7,
        "MSI: 64-bit address, one vector, disabled"
    );

    // BAR sizing: all-ones in, size mask out; both halves of 64-bit BARs.
    for (bar, size, flags) in [(0x10u64, BAR0_SIZE, 0x4u32), (0x18, APERTURE, 0xC)] {
        write32(&dev, CFG, bar, 0xFFFF_FFFF);
        write32(&dev, CFG, bar + 4, 0xFFFF_FFFF);
        let lo = read32(&dev, CFG, bar);
        let hi = read32(&dev, CFG, bar + 4);
        let mask = (u64::from(hi) << 32) | u64::from(lo & !0xF);
        assert_eq!(
            !mask + 1,
            size,
            "BAR at {bar:#x} sizes to {size:#x} (lo {lo:#x} hi {hi:#x})"
        );
        assert_eq!(lo & 0xF, flags, "BAR type bits are read-only");
        // Program an address; it reads back (low bits below the size drop).
        let addr = 0x0000_0008_4000_0000u64 | 0x123;
        write32(&dev, CFG, bar, addr as u32);
        write32(&dev, CFG, bar + 4, (addr >> 32) as u32);
        let got = (u64::from(read32(&dev, CFG, bar + 4)) << 32) | u64::from(read32(&dev, CFG, bar));
        assert_eq!(got, (addr & !(size - 1)) | u64::from(flags));
    }
    for bar in [0x20u64, 0x24, 0x30] {
        write32(&dev, CFG, bar, 0xFFFF_FFFF);
        assert_eq!(
            read32(&dev, CFG, bar),
            0,
            "unimplemented BAR/ROM at {bar:#x} stays 0"
        );
    }

    // Command register: only IO, MEM, bus master and INTx-disable stick.
    set_cfg16(&dev, 4, 0xFFFF);
    assert_eq!(cfg16(&dev, 4), 0x0407, "writable command bits");
    set_cfg16(&dev, 4, 0);
    assert_eq!(cfg16(&dev, 4), 0);

    // Read-only fields stay read-only, whatever the width of the write.
    let before = {
        let mut b = [0u8; 256];
        pread(&dev, CFG, 0, &mut b).unwrap();
        b
    };
    for off in [0u64, 2, 6, 8, 0x0E, 0x2C, 0x34, 0x3D, 0x40] {
        let _ = pwrite(&dev, CFG, off, &[0x5A]);
    }
    write32(&dev, CFG, 0, 0xDEAD_BEEF);
    write32(&dev, CFG, 8, 0xFFFF_FFFF);
    write32(&dev, CFG, 0x2C, 0);
    let mut after = [0u8; 256];
    pread(&dev, CFG, 0, &mut after).unwrap();
    for o in [
        0usize, 1, 2, 3, 6, 8, 9, 10, 11, 0x0E, 0x2C, 0x2D, 0x2E, 0x2F, 0x34, 0x3D, 0x40, 0x41,
    ] {
        assert_eq!(after[o], before[o], "read-only config byte {o:#x} changed");
    }

    // MSI: enable, address, data are writable; multiple-message enable is not.
    write32(&dev, CFG, 0x44, 0xFEE0_1004);
    write32(&dev, CFG, 0x48, 0x1);
    set_cfg16(&dev, 0x4C, 0x4321);
    set_cfg16(&dev, 0x42, 0xFFFF);
    assert_eq!(read32(&dev, CFG, 0x44), 0xFEE0_1004);
    assert_eq!(read32(&dev, CFG, 0x48), 1);
    assert_eq!(cfg16(&dev, 0x4C), 0x4321);
    assert_eq!(
        cfg16(&dev, 0x42),
        (1 << 7) | 1,
        "MSI enabled, still one vector, 64-bit"
    );

    // Reset: power-on state again.
    dev.reset();
    let mut reset = [0u8; 256];
    pread(&dev, CFG, 0, &mut reset).unwrap();
    assert_eq!(
        reset[..],
        cfg[..],
        "VFIO_DEVICE_RESET restores the power-on config space"
    );
}

#[test]
#[ignore = "runs inside the VM rig"]
fn vfio_command_register_gates_the_bars() {
    let m = vgpu(32);
    let a = attrs(&m);
    let dev = open(&m);
    let mut b = [0u8; 4];
    assert_eq!(
        errno(pread(&dev, BAR0, PVINFO, &mut b)),
        libc::EIO,
        "BAR0 with memory decode off"
    );
    assert_eq!(
        errno(pwrite(&dev, BAR2, a.ap_base, &b)),
        libc::EIO,
        "BAR2 with memory decode off"
    );
    let map = Mapping::new(&dev, BAR2, a.ap_base, 4096).expect("mmap the slice (no access yet)");
    assert_eq!(
        errno(map.probe(0)),
        libc::EFAULT,
        "aperture fault with decode off"
    );

    enable_mem(&dev);
    assert_eq!(read64(&dev, BAR0, PVINFO), VGT_MAGIC);
    map.write32(0, 0xC0DE_0001);
    assert_eq!(map.probe(0).expect("mapped"), 0xC0DE_0001);

    // Decode off again: the mapping is zapped and no longer faults in; the
    // data is still there once decode is back on.
    set_cfg16(&dev, 4, 0);
    assert_eq!(
        errno(map.probe(0)),
        libc::EFAULT,
        "decode off zaps the live mapping"
    );
    assert_eq!(errno(pread(&dev, BAR0, PVINFO, &mut b)), libc::EIO);
    enable_mem(&dev);
    assert_eq!(map.probe(0).expect("faults in again"), 0xC0DE_0001);

    // A device reset also turns decode off.
    dev.reset();
    assert_eq!(cfg16(&dev, 4), 0);
    assert_eq!(errno(map.probe(0)), libc::EFAULT, "reset zaps the mapping");
}

#[test]
#[ignore = "runs inside the VM rig"]
fn vfio_pvinfo_matches_sysfs() {
    let m = vgpu(64);
    let a = attrs(&m);
    let dev = open(&m);
    enable_mem(&dev);
    let mut magic = [0u8; 8];
    dev.region_read(BAR0, &mut magic, PVINFO);
    assert_eq!(
        u64::from_le_bytes(magic),
        VGT_MAGIC,
        "PVINFO magic through vfio-ioctls"
    );
    let pv = |o: u64| u64::from(read32(&dev, BAR0, PVINFO + o));
    assert_eq!(pv(0x08), 1, "version 1.0");
    assert_eq!(pv(0x0C), a.id, "vgt_id == gvt/vgpu_id");
    assert_eq!(
        (pv(0x40), pv(0x44)),
        (a.ap_base, a.ap_size),
        "mappable base/size == gvt/aperture_*"
    );
    assert_eq!(
        (pv(0x48), pv(0x4C)),
        (a.high_base, a.high_size),
        "non-mappable base/size == gvt/high_gm_*"
    );
    assert_eq!(pv(0x50), a.fence_count, "fence count == gvt/fence_count");
    assert_eq!(a.ap_size, 64 << 20);
    // Ballooning info is read-only to the guest.
    for o in [0x00u64, 0x0C, 0x40, 0x44, 0x48, 0x4C, 0x50] {
        write32(&dev, BAR0, PVINFO + o, 0x1111_1111);
    }
    assert_eq!(read64(&dev, BAR0, PVINFO), VGT_MAGIC);
    assert_eq!(
        (pv(0x40), pv(0x44), pv(0x50)),
        (a.ap_base, a.ap_size, a.fence_count)
    );
    // Guest-writable scratch registers and the GGTT view read back.
    write32(&dev, BAR0, RCS_TAIL, 0x40);
    assert_eq!(read32(&dev, BAR0, RCS_TAIL), 0x40, "RCS tail reads back");
    let pte = 8u64 << 20;
    assert_eq!(
        pwrite(&dev, BAR0, pte + 8 * 5, &0x1234_5001u64.to_le_bytes()).unwrap(),
        8
    );
    assert_eq!(
        read64(&dev, BAR0, pte + 8 * 5),
        0x1234_5001,
        "GGTT view entry reads back"
    );
}

#[test]
#[ignore = "runs inside the VM rig"]
fn vfio_aperture_mmap_and_region_agree() {
    let m = vgpu(32);
    let a = attrs(&m);
    // Back the whole slice with guest RAM, as a guest driver does before
    // using its aperture (unmapped entries all share one scratch page).
    let (dev, ram) = open_with_ram(&m, (a.ap_size / 4096) as usize, 0x4000_0000);
    enable_mem(&dev);
    map_gtt_range(&dev, &ram, a.ap_base, (a.ap_size / 4096) as usize);
    let area = sparse_areas(&dev, BAR2)[0];
    let map =
        Mapping::new(&dev, BAR2, area.offset, area.size as usize).expect("mmap the sparse area");
    let pages = area.size as usize / 4096;
    let balloon0 = ballooned(&m);
    // Mapping → region read.
    for p in [0, 1, pages / 2, pages - 1] {
        map.write32(p * 4096 + 8, 0xA000_0000 | p as u32);
    }
    for p in [0, 1, pages / 2, pages - 1] {
        assert_eq!(map.read32(p * 4096 + 8), 0xA000_0000 | p as u32);
        assert_eq!(
            ram.read32(p * 4096 + 8),
            0xA000_0000 | p as u32,
            "the write landed in guest RAM page {p}"
        );
        assert_eq!(
            read32(&dev, BAR2, a.ap_base + (p * 4096 + 8) as u64),
            0xA000_0000 | p as u32,
            "region read of page {p}"
        );
    }
    // Region write (crossing a page boundary) → mapping.
    let span: Vec<u8> = (0..64u8).collect();
    let at = a.ap_base + 3 * 4096 - 32;
    assert_eq!(pwrite(&dev, BAR2, at, &span).unwrap(), 64);
    for i in 0..16 {
        let v = map.read32(3 * 4096 - 32 + 4 * i);
        assert_eq!(
            v.to_le_bytes(),
            [
                4 * i as u8,
                4 * i as u8 + 1,
                4 * i as u8 + 2,
                4 * i as u8 + 3
            ]
        );
    }
    let mut back = vec![0u8; 64];
    assert_eq!(pread(&dev, BAR2, at, &mut back).unwrap(), 64);
    assert_eq!(back, span);
    // A large region read (several bounce chunks) sees the same bytes.
    let mut big = vec![0u8; 3 * 4096];
    assert_eq!(pread(&dev, BAR2, a.ap_base, &mut big).unwrap(), big.len());
    assert_eq!(&big[8..12], &0xA000_0000u32.to_le_bytes());
    assert_eq!(&big[4096 + 8..4096 + 12], &0xA000_0001u32.to_le_bytes());
    assert_eq!(
        ballooned(&m),
        balloon0,
        "accesses inside the slice are not ballooned"
    );
    // Partial mappings of the slice work too.
    let sub =
        Mapping::new(&dev, BAR2, area.offset + 4096, 4096).expect("mmap one page of the slice");
    assert_eq!(sub.read32(8), 0xA000_0001);
}

/// Guest RAM as QEMU allocates it by default: private anonymous memory (no
/// page cache behind it).  CPU writes through the aperture mapping reach it
/// (a write fault on a shared device mapping must not treat the guest's
/// anonymous page as a page of the device file: this used to oops in the
/// dirty-page accounting), and the mapping follows GGTT changes and DMA unmap.
#[test]
#[ignore = "runs inside the VM rig"]
fn vfio_aperture_over_private_anonymous_ram() {
    let m = vgpu(32);
    let a = attrs(&m);
    let (dev, mut ram) = open_with_private_ram(&m, 8, 0x4000_0000);
    enable_mem(&dev);
    map_gtt_range(&dev, &ram, a.ap_base, 4);
    let map = Mapping::new(&dev, BAR2, a.ap_base, 4 * 4096).expect("mmap the slice");
    for p in 0..4 {
        map.write32(p * 4096 + 12, 0xB0_0000 | p as u32);
        assert_eq!(
            ram.read32(p * 4096 + 12),
            0xB0_0000 | p as u32,
            "write through the aperture, page {p}"
        );
        ram.write32(p * 4096 + 16, 0xC0_0000 | p as u32);
        assert_eq!(
            map.read32(p * 4096 + 16),
            0xC0_0000 | p as u32,
            "guest RAM seen through the aperture, page {p}"
        );
    }
    // Remap page 1 onto RAM page 6: the mapping follows.
    ram.write32(6 * 4096 + 12, 0x66);
    map_gtt(&dev, &ram, a.ap_base / 4096 + 1, 6);
    assert_eq!(map.read32(4096 + 12), 0x66);
    // The VMM unmaps its RAM: the aperture falls back to scratch, no stale page.
    ram.unmap();
    for p in [0, 2, 3] {
        let v = map.probe(p * 4096 + 12).expect("still mapped (scratch)");
        assert_ne!(
            v,
            0xB0_0000 | p as u32,
            "page {p}: no access to the unmapped guest page"
        );
    }
    assert_ne!(
        map.probe(4096 + 12).expect("still mapped (scratch)"),
        0x66,
        "page 1: no access to the unmapped RAM page 6"
    );
    map.write32(0, 0x5C);
    assert_eq!(
        map.read32(4096),
        0x5C,
        "every page now reaches the scratch page"
    );
}

#[test]
#[ignore = "runs inside the VM rig"]
fn vfio_mmap_outside_the_slice_is_einval() {
    // Another vGPU first, so that this one's slice has memory below it.
    let other = vgpu(32);
    let m = vgpu(32);
    let (o, a) = (attrs(&other), attrs(&m));
    assert!(
        a.ap_base >= o.ap_base + o.ap_size,
        "this vGPU's slice lies above the first's: {o:?} {a:?}"
    );
    let dev = open(&m);
    let end = a.ap_base + a.ap_size;
    let mut bad = vec![
        (BAR2, a.ap_base - 4096, 4096usize, "page before the slice"),
        (BAR2, a.ap_base - 4096, 8192, "straddling the slice start"),
        (BAR2, o.ap_base, 4096, "the other vGPU's first page"),
        (BAR2, end, 4096, "page after the slice"),
        (
            BAR2,
            a.ap_base + a.ap_size - 4096,
            8192,
            "straddling the slice end",
        ),
    ];
    if end < APERTURE {
        bad.push((BAR2, APERTURE - 4096, 4096, "last aperture page"));
    }
    bad.push((BAR2, APERTURE, 4096, "beyond the aperture"));
    bad.push((BAR0, 0, 4096, "BAR0 is trapped"));
    bad.push((CFG, 0, 4096, "config space"));
    bad.push((1, 0, 4096, "absent BAR1"));
    bad.push((9, 0, 4096, "the EDID region (not mappable)"));
    bad.push((11, 0, 4096, "no region 11"));
    for (region, off, len, what) in bad {
        assert_eq!(
            errno(Mapping::new(&dev, region, off, len)),
            libc::EINVAL,
            "mmap {what}"
        );
    }
    // A private mapping of the slice itself is refused too.
    assert_eq!(
        errno(Mapping::with_flags(
            &dev,
            BAR2,
            a.ap_base,
            4096,
            libc::MAP_PRIVATE
        )),
        libc::EINVAL,
        "MAP_PRIVATE"
    );
    // A file offset whose page number overflows the region shift.
    // SAFETY: a fresh mapping request; it must fail.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&dev),
            i64::MAX & !0xFFF,
        )
    };
    assert_eq!(p, libc::MAP_FAILED, "huge offset");
}

#[test]
#[ignore = "runs inside the VM rig"]
fn vfio_outside_the_slice_is_ballooned() {
    let m = vgpu(32);
    let a = attrs(&m);
    let dev = open(&m);
    enable_mem(&dev);
    let outside = if a.ap_base > 0 {
        0
    } else {
        a.ap_base + a.ap_size
    };
    let b0 = ballooned(&m);
    assert_eq!(
        pwrite(&dev, BAR2, outside + 16, &0xFFFF_FFFFu32.to_le_bytes()).unwrap(),
        4,
        "write outside: accepted, dropped"
    );
    assert_eq!(read32(&dev, BAR2, outside + 16), 0, "read outside: 0");
    assert_eq!(
        ballooned(&m),
        b0 + 2,
        "both accesses counted in gvt/ballooned"
    );
    // A span that crosses a slice edge: the inside part lands, the outside
    // part is ballooned (one count per page piece).
    let (at, inside) = if a.ap_base + a.ap_size < APERTURE {
        (a.ap_base + a.ap_size - 8, 0..8)
    } else {
        (a.ap_base - 8, 8..16)
    };
    let data = [0x77u8; 16];
    assert_eq!(pwrite(&dev, BAR2, at, &data).unwrap(), 16);
    let mut back = [0xEEu8; 16];
    assert_eq!(pread(&dev, BAR2, at, &mut back).unwrap(), 16);
    for (i, b) in back.iter().enumerate() {
        assert_eq!(
            *b,
            if inside.contains(&i) { 0x77 } else { 0 },
            "byte {i} of the span across the slice edge"
        );
    }
    assert_eq!(ballooned(&m), b0 + 4);
    // Beyond the region: not ballooned, refused.
    let mut b = [0u8; 4];
    assert_eq!(errno(pread(&dev, BAR2, APERTURE, &mut b)), libc::EINVAL);
    assert_eq!(errno(pread(&dev, BAR2, APERTURE - 2, &mut b)), libc::EINVAL);
}

#[test]
#[ignore = "runs inside the VM rig"]
fn vfio_two_vgpus_are_isolated() {
    let m1 = vgpu(64);
    let m2 = vgpu(64);
    let (a1, a2) = (attrs(&m1), attrs(&m2));
    assert!(
        a1.ap_base + a1.ap_size <= a2.ap_base || a2.ap_base + a2.ap_size <= a1.ap_base,
        "aperture slices overlap: {a1:?} {a2:?}"
    );
    assert!(
        a1.high_base + a1.high_size <= a2.high_base || a2.high_base + a2.high_size <= a1.high_base,
        "high GM overlaps"
    );
    assert!(
        a1.fence_base + a1.fence_count <= a2.fence_base
            || a2.fence_base + a2.fence_count <= a1.fence_base,
        "fences overlap"
    );
    assert_ne!(a1.id, a2.id);
    let (d1, ram1) = open_with_ram(&m1, 16, 0x4000_0000);
    let (d2, ram2) = open_with_ram(&m2, 16, 0x4000_0000);
    enable_mem(&d1);
    enable_mem(&d2);
    // Each guest backs the pages it uses with its own RAM.
    for (k, p) in (0..a1.ap_size / 4096).step_by(1024).enumerate() {
        map_gtt(&d1, &ram1, a1.ap_base / 4096 + p, k);
        map_gtt(&d2, &ram2, a2.ap_base / 4096 + p, k);
    }
    let map1 = Mapping::new(&d1, BAR2, a1.ap_base, a1.ap_size as usize).expect("mmap vGPU 1 slice");
    let map2 = Mapping::new(&d2, BAR2, a2.ap_base, a2.ap_size as usize).expect("mmap vGPU 2 slice");
    for p in (0..a1.ap_size as usize / 4096).step_by(1024) {
        map1.write32(p * 4096, 0x1111_0000 | p as u32);
        map2.write32(p * 4096, 0x2222_0000 | p as u32);
    }
    // vGPU 2 cannot see or change vGPU 1's data, through region or mmap.
    let b2 = ballooned(&m2);
    assert_eq!(
        read32(&d2, BAR2, a1.ap_base),
        0,
        "vGPU 2 reads vGPU 1's slice as 0"
    );
    write32(&d2, BAR2, a1.ap_base, 0xBAD0_BAD0);
    assert_eq!(ballooned(&m2), b2 + 2);
    assert_eq!(
        errno(Mapping::new(&d2, BAR2, a1.ap_base, 4096)),
        libc::EINVAL,
        "vGPU 2 cannot map vGPU 1's slice"
    );
    assert_eq!(map1.read32(0), 0x1111_0000, "vGPU 1's data intact");
    assert_eq!(read32(&d1, BAR2, a1.ap_base), 0x1111_0000);
    assert_eq!(read32(&d1, BAR2, a2.ap_base), 0, "and the other way round");
    for p in (0..a1.ap_size as usize / 4096).step_by(1024) {
        assert_eq!(map1.read32(p * 4096), 0x1111_0000 | p as u32);
        assert_eq!(map2.read32(p * 4096), 0x2222_0000 | p as u32);
    }
    // PVINFO tells each its own slice.
    assert_eq!(u64::from(read32(&d1, BAR0, PVINFO + 0x40)), a1.ap_base);
    assert_eq!(u64::from(read32(&d2, BAR0, PVINFO + 0x40)), a2.ap_base);
}

fn drain(e: &EventFd) -> u64 {
    e.read().unwrap_or(0)
}

#[test]
#[ignore = "runs inside the VM rig"]
fn vfio_msi_and_intx_eventfds() {
    let m = vgpu(32);
    let dev = open(&m);
    let msi = EventFd::new(EFD_NONBLOCK).unwrap();
    dev.enable_msi(vec![&msi]).expect("wire MSI to an eventfd");
    dev.trigger_irq(VFIO_PCI_MSI_IRQ_INDEX, 0)
        .expect("loop back MSI (DATA_NONE)");
    dev.trigger_irq(VFIO_PCI_MSI_IRQ_INDEX, 0).unwrap();
    assert_eq!(drain(&msi), 2, "two MSIs counted by the eventfd");
    set_irqs(
        &dev,
        irq_set(
            VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER,
            VFIO_PCI_MSI_IRQ_INDEX,
            0,
            1,
            &[1],
        ),
    )
    .unwrap();
    set_irqs(
        &dev,
        irq_set(
            VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER,
            VFIO_PCI_MSI_IRQ_INDEX,
            0,
            1,
            &[0],
        ),
    )
    .unwrap();
    assert_eq!(drain(&msi), 1, "DATA_BOOL true triggers, false does not");
    assert!(
        dev.trigger_irq(VFIO_PCI_MSI_IRQ_INDEX, 1).is_err(),
        "only one MSI vector"
    );
    dev.disable_msi().expect("disable MSI");
    dev.trigger_irq(VFIO_PCI_MSI_IRQ_INDEX, 0).unwrap();
    assert_eq!(drain(&msi), 0, "no signal once MSI is disabled");
    // De-assign with fd -1.
    dev.enable_msi(vec![&msi]).unwrap();
    set_irqs(
        &dev,
        irq_set(
            VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            VFIO_PCI_MSI_IRQ_INDEX,
            0,
            1,
            &(-1i32).to_le_bytes(),
        ),
    )
    .unwrap();
    dev.trigger_irq(VFIO_PCI_MSI_IRQ_INDEX, 0).unwrap();
    assert_eq!(drain(&msi), 0, "fd -1 de-assigns");

    // INTx: automasked after it fires, unmasked by the VMM (ioctl or irqfd),
    // and silent while the guest sets INTx-disable.
    let intx = EventFd::new(EFD_NONBLOCK).unwrap();
    dev.enable_irq(VFIO_PCI_INTX_IRQ_INDEX, vec![&intx])
        .expect("wire INTx");
    dev.trigger_irq(VFIO_PCI_INTX_IRQ_INDEX, 0).unwrap();
    dev.trigger_irq(VFIO_PCI_INTX_IRQ_INDEX, 0).unwrap();
    assert_eq!(drain(&intx), 1, "INTx is automasked after the first");
    dev.unmask_irq(VFIO_PCI_INTX_IRQ_INDEX).expect("unmask");
    dev.trigger_irq(VFIO_PCI_INTX_IRQ_INDEX, 0).unwrap();
    assert_eq!(drain(&intx), 1, "fires again after unmask");
    let resample = EventFd::new(EFD_NONBLOCK).unwrap();
    dev.set_irq_resample_fd(VFIO_PCI_INTX_IRQ_INDEX, vec![&resample])
        .expect("unmask irqfd");
    resample.write(1).unwrap();
    let mut fired = 0;
    for _ in 0..100 {
        // The irqfd unmasks from a workqueue: retry until it has run.
        dev.trigger_irq(VFIO_PCI_INTX_IRQ_INDEX, 0).unwrap();
        fired = drain(&intx);
        if fired > 0 {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(fired, 1, "the unmask eventfd unmasked INTx");
    dev.unmask_irq(VFIO_PCI_INTX_IRQ_INDEX).unwrap();
    set_cfg16(&dev, 4, CMD_INTX_DISABLE);
    dev.trigger_irq(VFIO_PCI_INTX_IRQ_INDEX, 0).unwrap();
    assert_eq!(drain(&intx), 0, "no INTx while the guest disabled it");
    set_cfg16(&dev, 4, 0);
    dev.trigger_irq(VFIO_PCI_INTX_IRQ_INDEX, 0).unwrap();
    assert_eq!(drain(&intx), 1);
    dev.disable_irq(VFIO_PCI_INTX_IRQ_INDEX).unwrap();
}

#[test]
#[ignore = "runs inside the VM rig"]
fn vfio_bad_requests_get_the_right_errno() {
    let m = vgpu(32);
    let dev = open(&m);
    enable_mem(&dev);
    let mut b = [0u8; 16];
    // Config space: writes are 1, 2 or 4 naturally aligned bytes inside 256.
    assert_eq!(
        errno(pwrite(&dev, CFG, 4, &b[..3])),
        libc::EINVAL,
        "3-byte config write"
    );
    assert_eq!(
        errno(pwrite(&dev, CFG, 0x10, &b[..8])),
        libc::EINVAL,
        "8-byte config write"
    );
    assert_eq!(
        errno(pwrite(&dev, CFG, 0x12, &b[..4])),
        libc::EINVAL,
        "unaligned config write"
    );
    assert_eq!(
        errno(pwrite(&dev, CFG, 0x05, &b[..2])),
        libc::EINVAL,
        "unaligned 2-byte config write"
    );
    assert_eq!(
        errno(pwrite(&dev, CFG, 256, &b[..1])),
        libc::EINVAL,
        "config write past 256"
    );
    assert_eq!(
        errno(pread(&dev, CFG, 250, &mut b[..8])),
        libc::EINVAL,
        "config read past 256"
    );
    assert_eq!(
        errno(pread(&dev, CFG, 4096, &mut b[..4])),
        libc::EINVAL,
        "no extended config space"
    );
    assert_eq!(
        cfg16(&dev, 4),
        CMD_MEMORY,
        "rejected writes changed nothing"
    );
    // BAR0: single 1/2/4/8-byte naturally aligned accesses inside 16 MiB.
    assert_eq!(
        errno(pread(&dev, BAR0, RCS_TAIL, &mut b[..3])),
        libc::EINVAL,
        "3-byte BAR0 read"
    );
    assert_eq!(
        errno(pread(&dev, BAR0, RCS_TAIL, &mut b[..16])),
        libc::EINVAL,
        "16-byte BAR0 read"
    );
    assert_eq!(
        errno(pwrite(&dev, BAR0, 0x2032, &b[..4])),
        libc::EINVAL,
        "unaligned BAR0 write"
    );
    assert_eq!(
        errno(pread(&dev, BAR0, BAR0_SIZE, &mut b[..4])),
        libc::EINVAL,
        "BAR0 read past 16 MiB"
    );
    assert_eq!(
        errno(pwrite(&dev, BAR0, BAR0_SIZE - 4, &b[..8])),
        libc::EINVAL,
        "BAR0 write running past 16 MiB"
    );
    // Regions that do not exist or have no size.
    for r in [
        1u32,
        3,
        4,
        5,
        VFIO_PCI_ROM_REGION_INDEX,
        VFIO_PCI_VGA_REGION_INDEX,
        11,
        200,
    ] {
        assert_eq!(
            errno(pread(&dev, r, 0, &mut b[..4])),
            libc::EINVAL,
            "read of region {r}"
        );
        assert_eq!(
            errno(pwrite(&dev, r, 0, &b[..4])),
            libc::EINVAL,
            "write of region {r}"
        );
    }
    assert_eq!(
        errno(pread(&dev, CFG, 0, &mut b[..0])),
        0,
        "zero-length read is fine"
    );

    // GET_INFO / GET_REGION_INFO / GET_IRQ_INFO argsz and index checks.
    let mut info = vfio_device_info {
        argsz: 8,
        ..Default::default()
    };
    assert_eq!(
        errno(ioctl(&dev, VFIO_DEVICE_GET_INFO, &mut info)),
        libc::EINVAL,
        "GET_INFO argsz too small"
    );
    let mut ri = vfio_region_info {
        argsz: std::mem::size_of::<vfio_region_info>() as u32,
        index: VFIO_PCI_NUM_REGIONS + 2,
        ..Default::default()
    };
    assert_eq!(
        errno(ioctl(&dev, VFIO_DEVICE_GET_REGION_INFO, &mut ri)),
        libc::EINVAL,
        "region index 11"
    );
    ri.index = 0;
    ri.argsz = 12;
    assert_eq!(
        errno(ioctl(&dev, VFIO_DEVICE_GET_REGION_INFO, &mut ri)),
        libc::EINVAL,
        "GET_REGION_INFO argsz too small"
    );
    // A region info buffer too small for the capability chain: the kernel
    // reports the size it needs and no chain.
    ri = vfio_region_info {
        argsz: std::mem::size_of::<vfio_region_info>() as u32,
        index: BAR2,
        ..Default::default()
    };
    ioctl(&dev, VFIO_DEVICE_GET_REGION_INFO, &mut ri).unwrap();
    assert!(
        ri.argsz as usize > std::mem::size_of::<vfio_region_info>(),
        "argsz grows for the sparse-mmap cap"
    );
    assert_eq!(ri.cap_offset, 0);
    assert_ne!(ri.flags & VFIO_REGION_INFO_FLAG_CAPS, 0);
    let mut ii = vfio_irq_info {
        argsz: 16,
        index: VFIO_PCI_NUM_IRQS,
        ..Default::default()
    };
    assert_eq!(
        errno(ioctl(&dev, VFIO_DEVICE_GET_IRQ_INFO, &mut ii)),
        libc::EINVAL,
        "irq index 5"
    );
    ii = vfio_irq_info {
        argsz: 8,
        index: 0,
        ..Default::default()
    };
    assert_eq!(
        errno(ioctl(&dev, VFIO_DEVICE_GET_IRQ_INFO, &mut ii)),
        libc::EINVAL,
        "GET_IRQ_INFO argsz too small"
    );

    // SET_IRQS.
    let trig_ev = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    let trig_none = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
    let ev = EventFd::new(EFD_NONBLOCK).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&ev).to_le_bytes();
    assert_eq!(
        errno(set_irqs(
            &dev,
            irq_set(trig_none, VFIO_PCI_NUM_IRQS, 0, 1, &[])
        )),
        libc::EINVAL,
        "irq index 5"
    );
    assert_eq!(
        errno(set_irqs(
            &dev,
            irq_set(trig_ev, VFIO_PCI_MSIX_IRQ_INDEX, 0, 1, &fd)
        )),
        libc::EINVAL,
        "MSI-X has no vectors"
    );
    // ERR, per linux/vfio.h: an eventfd trigger, looped back by DATA_NONE
    // and DATA_BOOL (true only), unwired by count 0; one vector only.
    let err = VFIO_PCI_ERR_IRQ_INDEX;
    let fired = |e: &EventFd| e.read().unwrap_or(0);
    set_irqs(&dev, irq_set(trig_ev, err, 0, 1, &fd)).expect("wire ERR");
    set_irqs(&dev, irq_set(trig_none, err, 0, 1, &[])).expect("ERR DATA_NONE");
    assert_eq!(fired(&ev), 1, "ERR DATA_NONE signals the eventfd");
    let trig_bool = VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER;
    set_irqs(&dev, irq_set(trig_bool, err, 0, 1, &[0])).expect("ERR DATA_BOOL false");
    assert_eq!(fired(&ev), 0, "ERR DATA_BOOL false does not signal");
    set_irqs(&dev, irq_set(trig_bool, err, 0, 1, &[1])).expect("ERR DATA_BOOL true");
    assert_eq!(fired(&ev), 1, "ERR DATA_BOOL true signals");
    assert_eq!(
        errno(set_irqs(&dev, irq_set(trig_ev, err, 1, 1, &fd))),
        libc::EINVAL,
        "ERR vector 1"
    );
    assert_eq!(
        errno(set_irqs(
            &dev,
            irq_set(trig_ev, err, 0, 2, &[fd, fd].concat())
        )),
        libc::EINVAL,
        "two ERR vectors"
    );
    set_irqs(&dev, irq_set(trig_none, err, 0, 0, &[])).expect("unwire ERR (count 0)");
    set_irqs(&dev, irq_set(trig_none, err, 0, 1, &[])).expect("ERR DATA_NONE unwired");
    assert_eq!(fired(&ev), 0, "an unwired ERR signals nothing");
    set_irqs(&dev, irq_set(trig_ev, err, 0, 1, &fd)).expect("wire ERR again");
    set_irqs(&dev, irq_set(trig_ev, err, 0, 1, &(-1i32).to_le_bytes())).expect("ERR fd -1");
    set_irqs(&dev, irq_set(trig_none, err, 0, 1, &[])).expect("ERR DATA_NONE unwired");
    assert_eq!(fired(&ev), 0, "fd -1 unwires ERR");
    assert_eq!(
        errno(set_irqs(
            &dev,
            irq_set(trig_none, VFIO_PCI_MSI_IRQ_INDEX, 1, 1, &[])
        )),
        libc::EINVAL,
        "MSI vector 1"
    );
    assert_eq!(
        errno(set_irqs(
            &dev,
            irq_set(trig_ev, VFIO_PCI_MSI_IRQ_INDEX, 0, 2, &[fd, fd].concat())
        )),
        libc::EINVAL,
        "two MSI vectors"
    );
    let mut short = irq_set(trig_ev, VFIO_PCI_MSI_IRQ_INDEX, 0, 1, &fd);
    short[..4].copy_from_slice(&20u32.to_le_bytes());
    assert_eq!(
        errno(set_irqs(&dev, short)),
        libc::EINVAL,
        "argsz without room for the eventfd"
    );
    let mut tiny = irq_set(trig_none, VFIO_PCI_MSI_IRQ_INDEX, 0, 1, &[]);
    tiny[..4].copy_from_slice(&8u32.to_le_bytes());
    assert_eq!(
        errno(set_irqs(&dev, tiny)),
        libc::EINVAL,
        "argsz below the header"
    );
    assert_eq!(
        errno(set_irqs(
            &dev,
            irq_set(0xFFFF_0000 | trig_none, VFIO_PCI_MSI_IRQ_INDEX, 0, 1, &[])
        )),
        libc::EINVAL,
        "unknown flags"
    );
    assert_eq!(
        errno(set_irqs(
            &dev,
            irq_set(
                VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER,
                0,
                0,
                1,
                &[1]
            )
        )),
        libc::EINVAL,
        "two data types"
    );
    assert_eq!(
        errno(set_irqs(
            &dev,
            irq_set(
                VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK,
                VFIO_PCI_MSI_IRQ_INDEX,
                0,
                1,
                &[]
            )
        )),
        libc::EINVAL,
        "MSI is not maskable"
    );
    assert_eq!(
        errno(set_irqs(
            &dev,
            irq_set(
                VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK,
                VFIO_PCI_INTX_IRQ_INDEX,
                0,
                0,
                &[]
            )
        )),
        libc::EINVAL,
        "unmask of zero vectors"
    );
    let null = std::fs::File::open("/dev/null").unwrap();
    let nfd = std::os::fd::AsRawFd::as_raw_fd(&null).to_le_bytes();
    assert_eq!(
        errno(set_irqs(
            &dev,
            irq_set(trig_ev, VFIO_PCI_MSI_IRQ_INDEX, 0, 1, &nfd)
        )),
        libc::EINVAL,
        "a non-eventfd fd"
    );
    assert_eq!(
        errno(set_irqs(
            &dev,
            irq_set(trig_ev, VFIO_PCI_MSI_IRQ_INDEX, 0, 1, &999i32.to_le_bytes())
        )),
        libc::EBADF,
        "a closed fd"
    );
    assert_eq!(
        errno(set_irqs(
            &dev,
            irq_set(
                VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_UNMASK,
                VFIO_PCI_INTX_IRQ_INDEX,
                0,
                1,
                &nfd
            )
        )),
        libc::EINVAL,
        "unmask irqfd on a non-eventfd"
    );
    // Unknown ioctls.
    let mut junk = [0u8; 64];
    assert_eq!(
        errno(ioctl_bytes(&dev, vfio_ioc(60), &mut junk)),
        libc::ENOTTY,
        "unknown VFIO ioctl"
    );
    assert_eq!(
        errno(ioctl_bytes(&dev, 0x5401, &mut junk)),
        libc::ENOTTY,
        "TCGETS"
    );
    // Bad user pointers are EFAULT, not an oops.
    // SAFETY: nothing is mapped at address 16; the kernel must refuse it.
    assert_eq!(
        errno(unsafe { ioctl_raw(&dev, VFIO_DEVICE_GET_INFO, 16 as *mut u8) }),
        libc::EFAULT,
        "GET_INFO on a bad pointer"
    );
    // SAFETY: as above.
    assert_eq!(
        errno(unsafe { ioctl_raw(&dev, VFIO_DEVICE_SET_IRQS, 16 as *mut u8) }),
        libc::EFAULT,
        "SET_IRQS on a bad pointer"
    );
    // SAFETY: deliberately bad user pointers; the kernel must refuse them.
    let r = unsafe {
        libc::pread(
            std::os::fd::AsRawFd::as_raw_fd(&dev),
            16 as *mut libc::c_void,
            4,
            (region_off(BAR0) + PVINFO) as i64,
        )
    };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EFAULT)),
        "BAR0 read into a bad pointer"
    );
    // SAFETY: as above.
    let r = unsafe {
        libc::pwrite(
            std::os::fd::AsRawFd::as_raw_fd(&dev),
            16 as *const libc::c_void,
            4,
            region_off(CFG) as i64 + 4,
        )
    };
    assert_eq!(
        (r, std::io::Error::last_os_error().raw_os_error()),
        (-1, Some(libc::EFAULT)),
        "config write from a bad pointer"
    );
    // The device still works.
    assert_eq!(read64(&dev, BAR0, PVINFO), VGT_MAGIC);
}
