//! A guest points a GGTT entry at the VMM's own mapping of this vGPU's
//! aperture (issue 8, security).  A VMM such as QEMU DMA-maps every mmapped
//! BAR (`VFIO_IOMMU_MAP_DMA`) as if it were guest RAM, so the guest physical
//! address of BAR2 is an IOVA the driver can be asked to pin.  Pinning it
//! (`vfio_pin_pages` under the vGPU's state lock) would fault into the
//! driver's own aperture fault handler, from the same task, and that handler
//! takes the state lock: a host deadlock.  The driver's `pinning` guard
//! refuses that fault (SIGBUS: the pin fails) and the entry maps the vGPU's
//! scratch page.  This test plays VMM and guest: it does exactly that and
//! checks that the PTE write returns, that the entry resolves to scratch,
//! that the refusal is counted (`gvt/stats` `self_map_faults`), and that the
//! vGPU still works afterwards.  The rig fails the run on any kernel splat.
//!
//! Checked against the bug it guards: with the guard in `aperture_fault`
//! disabled, the PTE write never returns (the hung-task detector reports the
//! test's task "blocked on a mutex likely owned by" itself) and this test
//! fails with its deadlock message.

use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use gvt_vmtests::gvt::*;
use gvt_vmtests::Mdev;
use vfio_bindings::bindings::vfio::*;
use vfio_ioctls::VfioDevice;

const BAR0: u32 = VFIO_PCI_BAR0_REGION_INDEX;
const BAR2: u32 = VFIO_PCI_BAR2_REGION_INDEX;
const DISPLAY_REGION: u32 = VFIO_PCI_NUM_REGIONS + 1;

/// Guest RAM (the VMM's anonymous memory) at this IOVA.
const RAM_IOVA: u64 = 0x4000_0000;
const RAM_PAGES: usize = 4;
/// Where the "VMM" DMA-maps its mapping of the vGPU's aperture.
const SELF_IOVA: u64 = 0x8000_0000;
/// ... and its mapping of the display region.
const DISPLAY_IOVA: u64 = 0x9000_0000;
/// Pages of the aperture slice the VMM maps (and DMA-maps).
const AP_PAGES: usize = 8;

const RAM_MARK: u32 = 0x5A4D_0001;
const SCRATCH_MARK: u32 = 0x5C2A_7C4E;
/// How long a PTE write may take before the test calls it a deadlock (TCG
/// is slow, a working write takes milliseconds).
const DEADLOCK: Duration = Duration::from_secs(120);

/// Write GGTT entry `gm_page` = `pte` through BAR0, on another thread, and
/// wait for it at most [`DEADLOCK`]: a deadlocked driver fails the test
/// instead of hanging the rig.  Returns the write's result.
fn pte_write_guarded(
    dev: &VfioDevice,
    gm_page: u64,
    pte: u64,
    what: &str,
) -> std::io::Result<usize> {
    let fd = dev.as_raw_fd();
    let off = (region_off(BAR0) + GGTT_BAR0 + gm_page * 8) as i64;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let b = pte.to_le_bytes();
        // SAFETY: `b` is an 8-byte buffer; the fd outlives this thread unless
        // the test already failed (then the result is never looked at).
        let r = unsafe { libc::pwrite(fd, b.as_ptr().cast(), 8, off) };
        let r = if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r as usize)
        };
        let _ = tx.send(r);
    });
    match rx.recv_timeout(DEADLOCK) {
        Ok(r) => r,
        Err(_) => panic!("{what}: the PTE write did not return in {DEADLOCK:?}: the driver deadlocked on its own mapping"),
    }
}

/// 32 bits of the vGPU's aperture at graphics page `gm_page`, through the
/// BAR2 region (`pread`: the driver resolves the GGTT entry itself).
fn ap_read(dev: &VfioDevice, gm_page: u64) -> u32 {
    read32(dev, BAR2, gm_page * 4096)
}

fn ap_write(dev: &VfioDevice, gm_page: u64, v: u32) {
    write32(dev, BAR2, gm_page * 4096, v);
}

/// `VFIO_IOMMU_MAP_DMA` of `len` bytes at `vaddr`, as a VMM maps guest RAM
/// (read and write).
fn dma_map(ram: &GuestRam, iova: u64, vaddr: *mut u8, len: usize) -> std::io::Result<()> {
    // SAFETY: the mapping stays until the test unmaps the IOVA range
    // (`dma_unmap`) before it unmaps the memory.
    unsafe { ram.container().vfio_dma_map(iova, len, vaddr) }
        .map_err(|e| std::io::Error::other(format!("{e:?}")))
}

#[test]
#[ignore = "runs inside the VM rig"]
fn self_map_ggtt_entry_on_own_aperture_goes_to_scratch() {
    let m = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU");
    let a = attrs(&m);
    let (dev, ram) = open_with_ram(&m, RAM_PAGES, RAM_IOVA);
    enable_mem(&dev);
    let gm = |i: u64| a.ap_base / 4096 + i;

    // A working start: GM page 0 is guest RAM page 0.  GM page 2 has no
    // entry: the scratch page, which gets a marker so the test can tell it
    // from anything else.
    map_gtt(&dev, &ram, gm(0), 0);
    ram.write32(0, RAM_MARK);
    assert_eq!(
        ap_read(&dev, gm(0)),
        RAM_MARK,
        "GM page 0 is guest RAM page 0"
    );
    ap_write(&dev, gm(2), SCRATCH_MARK);
    assert_eq!(
        ap_read(&dev, gm(2)),
        SCRATCH_MARK,
        "an unmapped GM page is the scratch page"
    );
    let faults0 = stat(&m, "self_map_faults");
    let rejected0 = stat(&m, "ggtt_rejected");

    // The VMM maps the vGPU's aperture slice and DMA-maps that mapping, as
    // QEMU does with every mmapped BAR.  With the mdev's emulated IOMMU type1
    // only records the range (nothing is pinned at map time), so it accepts.
    let ap = Mapping::new(&dev, BAR2, a.ap_base, AP_PAGES * 4096).expect("mmap the aperture slice");
    dma_map(&ram, SELF_IOVA, ap.ptr, AP_PAGES * 4096)
        .expect("type1 accepts a DMA map of the BAR2 mapping");

    // Case 1, the fault path: GM page 1 points at the VMM's mapping of GM
    // page 1 itself, not yet faulted in.  Pinning it faults into our own
    // aperture handler from the pinning task: refused, the pin fails, the
    // entry is scratch.
    let r = pte_write_guarded(&dev, gm(1), (SELF_IOVA + 4096) | 1, "self-referential PTE");
    assert_eq!(
        r.expect("the PTE write itself succeeds (the entry is mediated, not refused)"),
        8
    );
    assert_eq!(
        ap_read(&dev, gm(1)),
        SCRATCH_MARK,
        "GM page 1 on its own aperture mapping resolves to scratch"
    );
    let faults1 = stat(&m, "self_map_faults");
    assert!(
        faults1 > faults0,
        "the refused self-fault is counted: self_map_faults {faults0} -> {faults1}"
    );
    let rejected1 = stat(&m, "ggtt_rejected");
    assert_eq!(
        rejected1,
        rejected0 + 1,
        "the PTE whose pin failed is counted as rejected"
    );
    eprintln!("self_map: fault path: self_map_faults {faults0} -> {faults1}, entry is scratch");
    // Through the CPU mapping too (a fault outside the pin: served normally).
    assert_eq!(
        ap.read32(4096),
        SCRATCH_MARK,
        "the aperture mapping of GM page 1 shows scratch"
    );

    // Case 2, the mapped path: the VMM's mapping of GM page 0 is faulted in
    // (guest RAM page 0 behind it).  Pinning through a PFN mapping that is
    // present finds a normal page, which type1 refuses for a PFNMAP vma: the
    // pin fails without reaching the fault handler; the entry is scratch.
    assert_eq!(
        ap.read32(0),
        RAM_MARK,
        "the VMM's mapping of GM page 0 is guest RAM page 0"
    );
    let r = pte_write_guarded(
        &dev,
        gm(3),
        SELF_IOVA | 1,
        "PTE on a faulted-in aperture page",
    );
    assert_eq!(r.expect("PTE write"), 8);
    assert_eq!(
        ap_read(&dev, gm(3)),
        SCRATCH_MARK,
        "GM page 3 on the mapped aperture page resolves to scratch"
    );
    assert_ne!(
        ap_read(&dev, gm(3)),
        RAM_MARK,
        "not an alias of guest RAM page 0 through the aperture"
    );
    assert_eq!(
        stat(&m, "ggtt_rejected"),
        rejected1 + 1,
        "counted as rejected"
    );
    eprintln!(
        "self_map: mapped path: self_map_faults {}, entry is scratch",
        stat(&m, "self_map_faults")
    );

    // The display region, mapped (read-only, as QEMU maps it) and DMA-mapped
    // the same way: its fault handler has the same guard; the pin cannot
    // succeed (a read-only PFN mapping pinned for write), the entry is scratch.
    let disp =
        RoMap::region(&dev, DISPLAY_REGION, AP_PAGES * 4096).expect("mmap the display region");
    // type1 takes it: a container of mdev devices only records the range
    // (it pins nothing until a vendor driver asks).  A refusal here would
    // leave the case below untested, so it fails the test.
    dma_map(&ram, DISPLAY_IOVA, disp.ptr.cast_mut(), AP_PAGES * 4096)
        .expect("VFIO_IOMMU_MAP_DMA of the VMM's display region mapping");
    let rejected2 = stat(&m, "ggtt_rejected");
    let r = pte_write_guarded(
        &dev,
        gm(4),
        DISPLAY_IOVA | 1,
        "PTE on the display region mapping",
    );
    assert_eq!(r.expect("PTE write"), 8);
    assert_eq!(
        ap_read(&dev, gm(4)),
        SCRATCH_MARK,
        "GM page 4 on the display region resolves to scratch"
    );
    assert_eq!(
        stat(&m, "ggtt_rejected"),
        rejected2 + 1,
        "the failed pin of the display region page is counted as rejected"
    );
    ram.container()
        .vfio_dma_unmap(DISPLAY_IOVA, AP_PAGES * 4096)
        .expect("unmap the display IOVA range");
    eprintln!("self_map: display region DMA-mapped; entry is scratch");
    drop(disp);

    // The vGPU still works: entries to real guest RAM, through the region
    // and through the VMM's aperture mapping (zapped on each PTE change).
    map_gtt(&dev, &ram, gm(1), 1);
    map_gtt(&dev, &ram, gm(3), 2);
    ap_write(&dev, gm(1), 0x1111_0001);
    assert_eq!(
        ram.read32(4096),
        0x1111_0001,
        "GM page 1 is guest RAM page 1 again"
    );
    ram.write32(2 * 4096, 0x3333_0003);
    assert_eq!(
        ap.read32(3 * 4096),
        0x3333_0003,
        "the aperture mapping of GM page 3 is guest RAM page 2"
    );
    assert_eq!(
        ap.read32(4096),
        0x1111_0001,
        "the aperture mapping of GM page 1 follows the new entry"
    );
    assert_eq!(ap_read(&dev, gm(2)), SCRATCH_MARK, "scratch untouched");

    // The VMM goes away in its usual order: DMA unmap, munmap, close.
    ram.container()
        .vfio_dma_unmap(SELF_IOVA, AP_PAGES * 4096)
        .expect("unmap the self IOVA range");
    drop(ap);
    drop(ram);
    drop(dev);
    m.remove().expect("remove vGPU");
}
