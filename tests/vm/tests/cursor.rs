//! The vGPU's cursor plane through VFIO (issue 8): the guest (played by this
//! test through BAR0 and the aperture mapping) draws a 64x64 ARGB cursor in
//! its aperture and programs cursor A (`CURACNTR` 0x70080, `CURABASE`
//! 0x70084, `CURAPOS` 0x70088); the VMM side queries the cursor plane
//! (`VFIO_DEVICE_QUERY_GFX_PLANE`, dma-buf, `drm_plane_type` 2), exports it
//! (`VFIO_DEVICE_GET_GFX_DMABUF`) and must see exactly those pixels, at the
//! position and hotspot the guest set.  A cursor outside the vGPU's own
//! memory is "no plane".

use std::os::fd::{AsRawFd, OwnedFd};

use gvt_vmtests::gvt::*;
use gvt_vmtests::Mdev;
use vfio_bindings::bindings::vfio::*;
use vfio_ioctls::VfioDevice;

const BAR0: u32 = VFIO_PCI_BAR0_REGION_INDEX;
const BAR2: u32 = VFIO_PCI_BAR2_REGION_INDEX;
const DISPLAY_READY: u64 = PVINFO + 0x804;
const CURSOR_X_HOT: u64 = PVINFO + 0x830;
const CURSOR_Y_HOT: u64 = PVINFO + 0x834;
/// `MCURSOR_MODE_64_ARGB_AX`.
const MODE_64_ARGB: u32 = 0x27;

const DMABUF: u32 = 1 << 1;
const PRIMARY: u32 = 1;
const CURSOR: u32 = 2;
/// `fourcc_code('A', 'R', '2', '4')`.
const DRM_FORMAT_ARGB8888: u32 = u32::from_le_bytes(*b"AR24");
const CURSOR_BYTES: usize = 64 * 64 * 4;

fn query(dev: &VfioDevice, plane_type: u32) -> PlaneInfo {
    query_plane(dev, DMABUF, plane_type).expect("QUERY_GFX_PLANE")
}

fn export(dev: &VfioDevice, id: u32) -> std::io::Result<OwnedFd> {
    export_dmabuf(dev, id)
}

/// The cursor pixel the test draws at (x, y) for `seed` (alpha varies too).
fn pixel(seed: u32, x: u32, y: u32) -> u32 {
    ((x * 4 + seed) << 24) | (y << 16) | (x << 8) | seed
}

/// Read `len` bytes of a dma-buf through a read-only shared mapping.
fn read_dmabuf(fd: &OwnedFd, len: usize) -> Vec<u32> {
    // SAFETY: a fresh read-only mapping of our own fd.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap the cursor dma-buf");
    let words: Vec<u32> =
        // SAFETY: `len` bytes are mapped, aligned.
        (0..len / 4).map(|i| unsafe { std::ptr::read_volatile(p.cast::<u32>().add(i)) }).collect();
    // SAFETY: unmapping what we mapped.
    unsafe { libc::munmap(p, len) };
    words
}

#[test]
#[ignore = "runs inside the VM rig"]
fn cursor_dmabuf_plane_shows_the_guest_cursor() {
    // Another vGPU first, so that this one's slice starts above it: the
    // check "cursor in another vGPU's memory" below needs memory below.
    let other = Mdev::create(PARENT, &type_mb(32)).expect("create the first vGPU");
    let m = Mdev::create(PARENT, &type_mb(32)).expect("create vGPU");
    // Cursor planes are dma-buf planes: offered for this vGPU.
    dmabuf_on(&m);
    let a = attrs(&m);
    let o = attrs(&other);
    assert!(
        a.ap_base >= o.ap_base + o.ap_size,
        "this vGPU's slice lies above the first's: {o:?} {a:?}"
    );
    let (dev, ram) = open_with_ram(&m, 32, 0x4000_0000);
    enable_mem(&dev);
    // Cursor image in the second 16 KiB of the aperture slice.
    let cur = a.ap_base + 4 * 4096;
    map_gtt_range(&dev, &ram, a.ap_base, 8);
    let map = Mapping::new(&dev, BAR2, cur, CURSOR_BYTES).expect("mmap the aperture");
    for y in 0..64 {
        for x in 0..64 {
            map.write32(((y * 64 + x) * 4) as usize, pixel(1, x, y));
        }
    }
    let reg = |off: u64, v: u32| write32(&dev, BAR0, off, v);
    reg(DISPLAY_READY, 1);

    // Disabled: no cursor plane.
    assert_no_plane(&query(&dev, CURSOR), "cursor disabled");
    // At (-10, 200): CURPOS is sign + magnitude per axis.
    reg(CURABASE, cur as u32);
    reg(CURAPOS, (200 << 16) | 0x8000 | 10);
    reg(CURACNTR, MODE_64_ARGB);
    let p = query(&dev, CURSOR);
    assert_eq!(
        (
            p.drm_format,
            p.drm_format_mod,
            p.width,
            p.height,
            p.stride,
            p.size
        ),
        (DRM_FORMAT_ARGB8888, 0, 64, 64, 256, CURSOR_BYTES as u32),
        "{p:?}"
    );
    assert_eq!((p.x_pos as i32, p.y_pos), (-10, 200), "position");
    assert_eq!(
        (p.x_hot, p.y_hot),
        (u32::MAX, u32::MAX),
        "no hotspot before the guest sets one (vfio.h)"
    );
    assert_eq!(p.drm_plane_type, CURSOR);
    assert_ne!(p.id, 0);
    // The primary plane is not there, and its query does not see the cursor.
    assert_no_plane(&query(&dev, PRIMARY), "primary plane (never programmed)");

    let fd = export(&dev, p.id).expect("GET_GFX_DMABUF of the cursor");
    // SAFETY: lseek on our own fd.
    assert_eq!(
        unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_END) } as usize,
        CURSOR_BYTES
    );
    let want: Vec<u32> = (0..64)
        .flat_map(|y| (0..64).map(move |x| pixel(1, x, y)))
        .collect();
    let got = read_dmabuf(&fd, CURSOR_BYTES);
    assert!(
        got == want,
        "the cursor dma-buf shows the guest's image (first differing pixel {:?})",
        got.iter().zip(&want).position(|(g, w)| g != w)
    );

    // The guest moves it and sets the hotspot: same image, same id.
    reg(CURAPOS, (30 << 16) | 40);
    reg(CURSOR_X_HOT, 5);
    reg(CURSOR_Y_HOT, 6);
    let q = query(&dev, CURSOR);
    assert_eq!((q.x_pos, q.y_pos, q.x_hot, q.y_hot), (40, 30, 5, 6));
    assert_eq!(
        q.id, p.id,
        "moving the cursor keeps its id (QEMU keeps its dma-buf)"
    );
    // The guest redraws in place: the buffer is the guest's memory.
    map.write32(0, 0x1234_5678);
    assert_eq!(read_dmabuf(&fd, CURSOR_BYTES)[0], 0x1234_5678);

    // Outside the vGPU's own memory (another vGPU's, or past its slice): no plane.
    reg(CURABASE, (o.ap_base + 4 * 4096) as u32);
    assert_no_plane(&query(&dev, CURSOR), "cursor in the other vGPU's slice");
    reg(CURABASE, (a.ap_base - 4096) as u32);
    assert_no_plane(
        &query(&dev, CURSOR),
        "cursor straddling the start of this vGPU's slice",
    );
    reg(CURABASE, (a.ap_base + a.ap_size - 4096) as u32);
    assert_no_plane(&query(&dev, CURSOR), "cursor straddling the slice's end");
    reg(CURABASE, (cur + 64) as u32);
    assert_no_plane(&query(&dev, CURSOR), "misaligned cursor");
    // Back: the remembered id again.
    reg(CURABASE, cur as u32);
    assert_eq!(query(&dev, CURSOR).id, p.id);
    drop(map);
    drop(ram);
    drop(dev);
    m.remove().expect("remove vGPU");
    other.remove().expect("remove the first vGPU");
}
