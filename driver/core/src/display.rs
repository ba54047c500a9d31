//! Per-vGPU primary plane emulation (paper §3.2 "Display management"; the
//! frame buffer lives in the vGPU's own slice of global graphics memory, §3.3).
//!
//! gvt-sim gives every vGPU one primary plane (docs/gvt-sim.md §9, Intel offsets and
//! encodings, [`super::regs`]): `DSPACNTR` (bit 31 enable, bits 29:26 pixel
//! format, bit 10 tiling), `DSPASTRIDE` (bytes per line), `DSPASURF` (GGTT
//! address of the first pixel) and `PIPEASRC` (`(w−1)<<16 | (h−1)`).  The
//! registers are plain virtual registers in the vGPU's vreg file; nothing
//! reaches a physical display.  What the host shows of the vGPU (QEMU's
//! console through `VFIO_DEVICE_QUERY_GFX_PLANE`) is decoded here, from the
//! vregs, by [`decode`]:
//!
//! A plane is reported only if **all** of these hold, checked in this order
//! (the first failure is the typed reason [`NoPlane`], never a guess):
//! 1. the guest set PVINFO `display_ready` to a non-zero value (GVT-g rule:
//!    i915 writes `VGT_DRV_DISPLAY_READY` once its display is up; before that
//!    the registers may hold BIOS/firmware leftovers) — [`NoPlane::DisplayNotReady`];
//! 2. `DSPACNTR` bit 31 (enable) is set — [`NoPlane::PlaneDisabled`];
//! 3. the format field is one of Intel's encodings in [`PixelFormat`]
//!    (`DISP_FORMAT_BGRX565` 5, `BGRX888` 6, `BGRA888` 7, `RGBX888` 14,
//!    `RGBA888` 15), and the plane is linear (`DISP_TILED`, bit 10, clear:
//!    gvt-sim has no tiling) — [`NoPlane::UnsupportedFormat`], [`NoPlane::Tiled`];
//! 4. the stride is a multiple of 64 bytes (Intel's linear-surface stride
//!    alignment), at most [`MAX_STRIDE`] (32 KiB, i965+ linear limit; 8192
//!    XRGB pixels) and at least `width × bytes per pixel`;
//! 5. `DSPASURF` is 4 KiB aligned (a GGTT page; Intel ignores the low bits,
//!    gvt-sim rejects them so a sloppy driver is diagnosed, not shown shifted);
//! 6. the whole surface, `[surf, surf + stride × height)` rounded up to whole
//!    pages, lies inside **one** of the vGPU's own GM slices (its aperture
//!    slice or its high slice, GVT-g's `intel_gvt_ggtt_validate_range`).
//!    Arithmetic is 64-bit and checked: no register value overflows into
//!    another range.
//!
//! So an invalid plane is "no plane" with a reason ([`NoPlane`]'s `Display`
//! says what the guest got wrong: the black-console diagnosis), and a valid
//! plane only ever names pages of its owner's GGTT slices; the pages behind
//! them come from that vGPU's shadow GGTT ([`framebuffer_pages`]): a pinned
//! page of that guest or that vGPU's scratch page, nothing else.
//!
//! Plane identity ([`PlaneIds`]): QEMU re-creates its display surface when the
//! plane id changes and caches dma-bufs by id, so an id is bound to one plane
//! description (surface address, format, size, stride): it stays the same while
//! the plane does not change, a changed plane gets a different id, and a plane
//! seen recently gets its old id back (double-buffered flips A→B→A reuse
//! QEMU's cached dma-bufs, as GVT-g's `pick_dmabuf_by_info` does).  Id 0 means
//! "no plane".
//!
//! **Cursor plane** ([`decode_cursor`], i9xx cursor A, Intel offsets):
//! `CURACNTR` 0x70080 (bits 5:0 the mode: 0x27 64×64, 0x22 128×128, 0x23
//! 256×256, all 32-bit ARGB, i915's `MCURSOR_MODE_*_ARGB_AX`; 0 disabled),
//! `CURABASE` 0x70084 (GGTT address of the image, validated like the primary
//! surface: display ready, 4 KiB aligned, the whole `n × n × 4` bytes inside
//! one of the vGPU's own slices) and `CURAPOS` 0x70088 (sign and magnitude
//! per axis: x bits 14:0 with sign bit 15, y bits 30:16 with sign bit 31).
//! It is offered as a dma-buf plane only (`drm_plane_type` 2): `x_pos`/`y_pos`
//! are the position as a two's-complement `i32` (a cursor may hang off the
//! top or left edge), `x_hot`/`y_hot` the guest's PVINFO `cursor_x_hot`/
//! `cursor_y_hot` (0xFFFFFFFF, vfio.h's "no hotspot", until the guest writes
//! them, as GVT-g).  Cursor ids have bit 31 set ([`CURSOR_ID_BIT`]), so they
//! never collide with primary ids (QEMU caches both kinds of dma-buf in one
//! list, by id); moving the cursor keeps its id.
//!
//! VFIO side ([`query_gfx_plane`]): the answer to `VFIO_DEVICE_QUERY_GFX_PLANE`
//! (`struct vfio_device_gfx_plane_info`) for region planes (a VFIO region that
//! maps the current framebuffer pages, [`region_fault`]/[`region_read`]) and
//! dma-buf planes ([`PlaneIds::lookup`] + [`framebuffer_pages`]), with probes
//! answered from what the kernel really implements ([`GfxCaps`]).

use core::fmt;
use core::ops::Range;

use super::ggtt::{Ggtt, VgpuGm};
use super::mem::{GmRange, Gma, HostPage, MemError, PAGE_SHIFT, PAGE_SIZE};
use super::pvinfo::{vgtif, PVINFO_BASE};
use super::regs::{
    self, PipeSrc, PlaneCtl, CURABASE, CURACNTR, CURAPOS, DSPACNTR, DSPASTRIDE, DSPASURF, PIPEASRC,
};
use super::services::HostMemory;

/// Intel `DISP_TILED` (DSPCNTR bit 10, i965+): X-tiled scan-out.
pub const PLANE_CTL_TILED: u32 = 1 << 10;
/// Stride alignment of a linear surface, bytes (Intel: 64).
pub const STRIDE_ALIGN: u32 = 64;
/// Largest stride, bytes (Intel i965+ linear limit: 32 KiB).
pub const MAX_STRIDE: u32 = 32 * 1024;
/// Largest height PIPEASRC can express (12-bit field + 1).
pub const MAX_HEIGHT: u32 = 4096;
/// Largest width PIPEASRC can express (13-bit field + 1).
pub const MAX_WIDTH: u32 = 8192;
/// Largest plane in bytes: [`MAX_STRIDE`] × [`MAX_HEIGHT`] (128 MiB).
pub const MAX_PLANE_BYTES: u64 = MAX_STRIDE as u64 * MAX_HEIGHT as u64;
/// vreg index (dword) of PVINFO `display_ready`.
pub const DISPLAY_READY_VREG: usize = regs::fixed_index(PVINFO_BASE + vgtif::DISPLAY_READY);

/// A DRM fourcc code (`fourcc_code()` of `drm_fourcc.h`).
pub const fn fourcc(a: u8, b: u8, c: u8, d: u8) -> u32 {
    (a as u32) | ((b as u32) << 8) | ((c as u32) << 16) | ((d as u32) << 24)
}

/// DRM fourcc codes of the formats a plane may have.
pub mod drm_format {
    use super::fourcc;
    /// `DRM_FORMAT_RGB565` ('RG16').
    pub const RGB565: u32 = fourcc(b'R', b'G', b'1', b'6');
    /// `DRM_FORMAT_XRGB8888` ('XR24').
    pub const XRGB8888: u32 = fourcc(b'X', b'R', b'2', b'4');
    /// `DRM_FORMAT_ARGB8888` ('AR24').
    pub const ARGB8888: u32 = fourcc(b'A', b'R', b'2', b'4');
    /// `DRM_FORMAT_XBGR8888` ('XB24').
    pub const XBGR8888: u32 = fourcc(b'X', b'B', b'2', b'4');
    /// `DRM_FORMAT_ABGR8888` ('AB24').
    pub const ABGR8888: u32 = fourcc(b'A', b'B', b'2', b'4');
    /// `DRM_FORMAT_MOD_LINEAR`.
    pub const MOD_LINEAR: u64 = 0;
}

/// A supported primary-plane pixel format: Intel's DSPCNTR encoding (bits
/// 29:26, `DISP_FORMAT_*` of i915's `i9xx_plane_regs.h`) and the DRM fourcc
/// i915's `i9xx_format_to_fourcc` maps it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// `DISP_FORMAT_BGRX565` (5) = `DRM_FORMAT_RGB565`.
    Rgb565,
    /// `DISP_FORMAT_BGRX888` (6) = `DRM_FORMAT_XRGB8888`: gvt-sim's default.
    Xrgb8888,
    /// `DISP_FORMAT_BGRA888` (7) = `DRM_FORMAT_ARGB8888`.
    Argb8888,
    /// `DISP_FORMAT_RGBX888` (14) = `DRM_FORMAT_XBGR8888`.
    Xbgr8888,
    /// `DISP_FORMAT_RGBA888` (15) = `DRM_FORMAT_ABGR8888`.
    Abgr8888,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 5] = [
        PixelFormat::Rgb565,
        PixelFormat::Xrgb8888,
        PixelFormat::Argb8888,
        PixelFormat::Xbgr8888,
        PixelFormat::Abgr8888,
    ];

    /// The format of DSPCNTR's format field value `field` (bits 29:26
    /// shifted down), if supported.
    pub const fn from_intel(field: u32) -> Option<Self> {
        Some(match field {
            5 => PixelFormat::Rgb565,
            PlaneCtl::FORMAT_XRGB8888 => PixelFormat::Xrgb8888,
            7 => PixelFormat::Argb8888,
            14 => PixelFormat::Xbgr8888,
            15 => PixelFormat::Abgr8888,
            _ => return None,
        })
    }
    /// The DSPCNTR format field value (bits 29:26 shifted down).
    pub const fn intel(self) -> u32 {
        match self {
            PixelFormat::Rgb565 => 5,
            PixelFormat::Xrgb8888 => PlaneCtl::FORMAT_XRGB8888,
            PixelFormat::Argb8888 => 7,
            PixelFormat::Xbgr8888 => 14,
            PixelFormat::Abgr8888 => 15,
        }
    }
    /// The DRM fourcc (`vfio_device_gfx_plane_info.drm_format`).
    pub const fn drm_fourcc(self) -> u32 {
        match self {
            PixelFormat::Rgb565 => drm_format::RGB565,
            PixelFormat::Xrgb8888 => drm_format::XRGB8888,
            PixelFormat::Argb8888 => drm_format::ARGB8888,
            PixelFormat::Xbgr8888 => drm_format::XBGR8888,
            PixelFormat::Abgr8888 => drm_format::ABGR8888,
        }
    }
    pub const fn bytes_per_pixel(self) -> u32 {
        match self {
            PixelFormat::Rgb565 => 2,
            _ => 4,
        }
    }
}

/// The display registers of one vGPU, as the guest last wrote them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DisplayRegs {
    pub ctl: PlaneCtl,
    pub stride: u32,
    pub surf: u32,
    pub src: PipeSrc,
    /// PVINFO `display_ready`.
    pub display_ready: u32,
}

impl DisplayRegs {
    /// Read them from the vGPU's vreg file (`vregs[offset / 4]`, the layout
    /// of [`super::mmio`]); a register beyond a short slice reads as 0.
    pub fn from_vregs(vregs: &[u32]) -> Self {
        let r = |off: u32| regs::vreg_get(vregs, off);
        DisplayRegs {
            ctl: PlaneCtl(r(DSPACNTR)),
            stride: r(DSPASTRIDE),
            surf: r(DSPASURF),
            src: PipeSrc(r(PIPEASRC)),
            display_ready: vregs.get(DISPLAY_READY_VREG).copied().unwrap_or(0),
        }
    }
}

/// Why a vGPU has no plane to show (QUERY_GFX_PLANE answers "no plane").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoPlane {
    /// PVINFO `display_ready` is 0: the guest driver has not (yet) told us
    /// its display is initialised.
    DisplayNotReady,
    /// DSPACNTR bit 31 is clear.
    PlaneDisabled,
    /// DSPACNTR format field (bits 29:26) is not a supported format.
    UnsupportedFormat(u32),
    /// DSPACNTR bit 10 (tiled scan-out): gvt-sim scans out linear surfaces only.
    Tiled,
    /// DSPASTRIDE is not a multiple of [`STRIDE_ALIGN`].
    StrideMisaligned(u32),
    /// DSPASTRIDE is above [`MAX_STRIDE`].
    StrideTooLarge(u32),
    /// DSPASTRIDE is below `width × bytes per pixel` (`min`).
    StrideTooSmall { stride: u32, min: u32 },
    /// DSPASURF is not 4 KiB aligned.
    SurfaceMisaligned(u32),
    /// `[surface, surface + size)` is not inside one of the vGPU's own GM
    /// slices (or the plane was checked against another vGPU's slices).
    SurfaceOutsideGm { surface: u64, size: u64 },
    /// CURACNTR's mode (bits 5:0) is 0: no cursor.
    CursorDisabled,
    /// CURACNTR's mode (bits 5:0) is not one of [`CursorMode`]'s.
    CursorMode(u32),
}

impl NoPlane {
    /// A short, stable reason (for counters and logs).
    pub const fn reason(&self) -> &'static str {
        match self {
            NoPlane::DisplayNotReady => "display not ready",
            NoPlane::PlaneDisabled => "plane disabled",
            NoPlane::UnsupportedFormat(_) => "unsupported format",
            NoPlane::Tiled => "tiled surface",
            NoPlane::StrideMisaligned(_) => "stride misaligned",
            NoPlane::StrideTooLarge(_) => "stride too large",
            NoPlane::StrideTooSmall { .. } => "stride too small",
            NoPlane::SurfaceMisaligned(_) => "surface misaligned",
            NoPlane::SurfaceOutsideGm { .. } => "surface outside the vGPU's graphics memory",
            NoPlane::CursorDisabled => "cursor disabled",
            NoPlane::CursorMode(_) => "unsupported cursor mode",
        }
    }
}

impl fmt::Display for NoPlane {
    /// What the guest got wrong, for the kernel log (the "black console"
    /// diagnosis).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NoPlane::DisplayNotReady => f.write_str(
                "guest has not initialized the display: PVINFO display_ready (BAR0 0x78804) is 0 \
                 (guest graphics driver not loaded, or not vGPU-aware)",
            ),
            NoPlane::PlaneDisabled => f.write_str("primary plane disabled (DSPACNTR bit 31 clear)"),
            NoPlane::UnsupportedFormat(v) => write!(
                f,
                "DSPACNTR pixel format {v:#x} unsupported (supported: 5 RGB565, 6 XRGB8888, 7 ARGB8888, \
                 14 XBGR8888, 15 ABGR8888)"
            ),
            NoPlane::Tiled => f.write_str("DSPACNTR asks for a tiled surface (bit 10); only linear is supported"),
            NoPlane::StrideMisaligned(s) => write!(f, "DSPASTRIDE {s} is not a multiple of {STRIDE_ALIGN} bytes"),
            NoPlane::StrideTooLarge(s) => write!(f, "DSPASTRIDE {s} is above the {MAX_STRIDE}-byte limit"),
            NoPlane::StrideTooSmall { stride, min } => {
                write!(f, "DSPASTRIDE {stride} is smaller than one line of PIPEASRC width ({min} bytes)")
            }
            NoPlane::SurfaceMisaligned(s) => write!(f, "DSPASURF {s:#x} is not 4 KiB aligned"),
            NoPlane::SurfaceOutsideGm { surface, size } => write!(
                f,
                "surface [{surface:#x}, +{size:#x}) is not inside the vGPU's aperture or high GM slice"
            ),
            NoPlane::CursorDisabled => f.write_str("cursor disabled (CURACNTR mode 0)"),
            NoPlane::CursorMode(m) => {
                write!(f, "CURACNTR mode {m:#x} unsupported (supported: 0x27 64x64, 0x22 128x128, 0x23 256x256 ARGB)")
            }
        }
    }
}

/// A validated primary plane: a linear surface of `height` lines of `stride`
/// bytes at graphics address `surface`, entirely inside one GM slice of the
/// vGPU it was decoded for.  Only [`decode`] makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Plane {
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: u32,
    surface: Gma,
}

impl Plane {
    pub const fn format(&self) -> PixelFormat {
        self.format
    }
    pub const fn width(&self) -> u32 {
        self.width
    }
    pub const fn height(&self) -> u32 {
        self.height
    }
    /// Bytes per line.
    pub const fn stride(&self) -> u32 {
        self.stride
    }
    /// GGTT address of the first pixel (4 KiB aligned).
    pub const fn surface(&self) -> Gma {
        self.surface
    }
    /// `stride × height`.
    pub const fn size(&self) -> u64 {
        self.stride as u64 * self.height as u64
    }
    /// Pages the surface spans.
    pub const fn pages(&self) -> u64 {
        (self.size() + PAGE_SIZE - 1) >> PAGE_SHIFT
    }
    /// [`Plane::size`] rounded up to whole pages (VFIO's `size`, the dma-buf size).
    pub const fn mapped_size(&self) -> u64 {
        self.pages() << PAGE_SHIFT
    }
    /// The graphics memory the surface covers, whole pages.
    pub const fn gm_range(&self) -> GmRange {
        GmRange::new(self.surface, self.mapped_size())
    }
    /// The GGTT entry indices covering the surface (the framebuffer page
    /// list: map entry `i` through the vGPU's shadow GGTT).
    pub const fn ggtt_indices(&self) -> Range<u64> {
        let first = self.surface >> PAGE_SHIFT;
        first..first + self.pages()
    }
    /// Byte offset of pixel (x, y) from the surface start.
    pub fn pixel_offset(&self, x: u32, y: u32) -> Option<u64> {
        if x >= self.width || y >= self.height {
            return None;
        }
        Some(y as u64 * self.stride as u64 + x as u64 * self.format.bytes_per_pixel() as u64)
    }
}

/// Whether `[base, base + size)` lies in one of `gm`'s slices.
fn in_one_slice(gm: &VgpuGm, base: Gma, size: u64) -> bool {
    gm.aperture.contains(base, size) || gm.high.contains(base, size)
}

/// Decode and validate the primary plane (module docs: the rules, in order).
pub fn decode(regs: &DisplayRegs, gm: &VgpuGm) -> Result<Plane, NoPlane> {
    if regs.display_ready == 0 {
        return Err(NoPlane::DisplayNotReady);
    }
    if !regs.ctl.enable() {
        return Err(NoPlane::PlaneDisabled);
    }
    let field = regs.ctl.format();
    let format = PixelFormat::from_intel(field).ok_or(NoPlane::UnsupportedFormat(field))?;
    if regs.ctl.0 & PLANE_CTL_TILED != 0 {
        return Err(NoPlane::Tiled);
    }
    let width = regs.src.width_minus_1().wrapping_add(1);
    let height = regs.src.height_minus_1().wrapping_add(1);
    let stride = regs.stride;
    if stride % STRIDE_ALIGN != 0 {
        return Err(NoPlane::StrideMisaligned(stride));
    }
    if stride > MAX_STRIDE {
        return Err(NoPlane::StrideTooLarge(stride));
    }
    let min = width.saturating_mul(format.bytes_per_pixel());
    if stride < min {
        return Err(NoPlane::StrideTooSmall { stride, min });
    }
    if u64::from(regs.surf) % PAGE_SIZE != 0 {
        return Err(NoPlane::SurfaceMisaligned(regs.surf));
    }
    let plane = Plane {
        format,
        width,
        height,
        stride,
        surface: u64::from(regs.surf),
    };
    if !in_one_slice(gm, plane.surface, plane.mapped_size()) {
        return Err(NoPlane::SurfaceOutsideGm {
            surface: plane.surface,
            size: plane.size(),
        });
    }
    Ok(plane)
}

/// [`decode`] straight from the vreg file.
pub fn decode_vregs(vregs: &[u32], gm: &VgpuGm) -> Result<Plane, NoPlane> {
    decode(&DisplayRegs::from_vregs(vregs), gm)
}

/// A supported cursor mode (`CURCNTR` bits 5:0, i915's
/// `MCURSOR_MODE_*_ARGB_AX`): a square 32-bit ARGB image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorMode {
    /// 0x27: 64×64.
    Argb64,
    /// 0x22: 128×128.
    Argb128,
    /// 0x23: 256×256.
    Argb256,
}

impl CursorMode {
    /// The mode bits of CURCNTR.
    pub const MASK: u32 = 0x3F;

    pub const fn from_intel(bits: u32) -> Option<Self> {
        match bits {
            0x27 => Some(CursorMode::Argb64),
            0x22 => Some(CursorMode::Argb128),
            0x23 => Some(CursorMode::Argb256),
            _ => None,
        }
    }
    pub const fn intel(self) -> u32 {
        match self {
            CursorMode::Argb64 => 0x27,
            CursorMode::Argb128 => 0x22,
            CursorMode::Argb256 => 0x23,
        }
    }
    /// Width and height in pixels.
    pub const fn size(self) -> u32 {
        match self {
            CursorMode::Argb64 => 64,
            CursorMode::Argb128 => 128,
            CursorMode::Argb256 => 256,
        }
    }
}

/// Bit 31 of every cursor plane id (primary ids never have it).
pub const CURSOR_ID_BIT: u32 = 1 << 31;

/// A `CURPOS` value as (x, y): sign and magnitude per axis.
pub fn cursor_position(pos: u32) -> (i32, i32) {
    let axis = |v: u32| {
        let m = (v & 0x7FFF) as i32;
        if v & 0x8000 != 0 {
            -m
        } else {
            m
        }
    };
    (axis(pos), axis(pos >> 16))
}

/// The validated cursor plane and its position (module docs: the rules).
/// The plane is what the image is (identity, dma-buf pages); the position
/// is not part of it.
pub fn decode_cursor(vregs: &[u32], gm: &VgpuGm) -> Result<(Plane, (i32, i32)), NoPlane> {
    let r = |off: u32| regs::vreg_get(vregs, off);
    if vregs.get(DISPLAY_READY_VREG).copied().unwrap_or(0) == 0 {
        return Err(NoPlane::DisplayNotReady);
    }
    let bits = r(CURACNTR) & CursorMode::MASK;
    if bits == 0 {
        return Err(NoPlane::CursorDisabled);
    }
    let mode = CursorMode::from_intel(bits).ok_or(NoPlane::CursorMode(bits))?;
    let base = r(CURABASE);
    if u64::from(base) % PAGE_SIZE != 0 {
        return Err(NoPlane::SurfaceMisaligned(base));
    }
    let n = mode.size();
    let plane = Plane {
        format: PixelFormat::Argb8888,
        width: n,
        height: n,
        stride: n * 4,
        surface: u64::from(base),
    };
    if !in_one_slice(gm, plane.surface, plane.mapped_size()) {
        return Err(NoPlane::SurfaceOutsideGm {
            surface: plane.surface,
            size: plane.size(),
        });
    }
    Ok((plane, cursor_position(r(CURAPOS))))
}

/// `VFIO_DEVICE_QUERY_GFX_PLANE` for the cursor (`drm_plane_type` 2): a
/// dma-buf plane only (a region query, or a probe, is [`query_gfx_plane`]'s).
/// `hot` is the guest's PVINFO hotspot; `ids` the cursor identities (their
/// ids are given out with [`CURSOR_ID_BIT`] set); `primary` the primary's
/// current observation, returned unchanged (the display region is not
/// affected by the cursor).
pub fn query_cursor<const N: usize>(
    vregs: &[u32],
    gm: &VgpuGm,
    hot: (u32, u32),
    ids: &mut PlaneIds<N>,
    primary: Observed,
) -> QueryAnswer {
    match decode_cursor(vregs, gm) {
        Ok((p, (x, y))) => {
            let id = ids.observe(Some(&p)).id | CURSOR_ID_BIT;
            let info = GfxPlaneInfo {
                x_pos: x as u32,
                y_pos: y as u32,
                x_hot: hot.0,
                y_hot: hot.1,
                ..GfxPlaneInfo::of(&p, id, GfxQuery::DmaBuf, 0)
            };
            QueryAnswer {
                info,
                observed: primary,
                no_plane: None,
            }
        }
        Err(e) => {
            ids.observe(None);
            QueryAnswer {
                info: GfxPlaneInfo::NONE,
                observed: primary,
                no_plane: Some(e),
            }
        }
    }
}

/// What [`PlaneIds::observe`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The plane's id (0: no plane).
    pub id: u32,
    /// The id differs from the previous observation's: the kernel drops the
    /// display region's user mappings so the VMM faults in the new pages.
    pub changed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    id: u32,
    plane: Plane,
    last_used: u64,
}

/// Plane identity: ids for the last `N` distinct planes (least recently
/// observed evicted first).  `N` ≥ 1.
#[derive(Clone, Debug)]
pub struct PlaneIds<const N: usize> {
    slots: [Option<Slot>; N],
    next_id: u32,
    clock: u64,
    current: u32,
    changes: u64,
}

impl<const N: usize> PlaneIds<N> {
    pub const fn new() -> Self {
        const { assert!(N > 0, "PlaneIds needs at least one slot") };
        PlaneIds {
            slots: [None; N],
            next_id: 1,
            clock: 0,
            current: 0,
            changes: 0,
        }
    }

    /// The id of the plane observed last (0: none).
    pub fn current(&self) -> u32 {
        self.current
    }
    /// How many times the observed id changed.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The plane that id `id` was given to, while it is remembered (a
    /// `VFIO_DEVICE_GET_GFX_DMABUF` argument).
    pub fn lookup(&self, id: u32) -> Option<Plane> {
        if id == 0 {
            return None;
        }
        self.slots
            .iter()
            .flatten()
            .find(|s| s.id == id)
            .map(|s| s.plane)
    }

    /// Record the current plane (from [`decode`]; `None` for no plane) and
    /// return its id.
    pub fn observe(&mut self, plane: Option<&Plane>) -> Observed {
        self.clock = self.clock.wrapping_add(1);
        let id = match plane {
            None => 0,
            Some(p) => self.id_of(p),
        };
        let changed = id != self.current;
        if changed {
            self.changes = self.changes.wrapping_add(1);
        }
        self.current = id;
        Observed { id, changed }
    }

    fn id_of(&mut self, p: &Plane) -> u32 {
        let clock = self.clock;
        if let Some(s) = self.slots.iter_mut().flatten().find(|s| s.plane == *p) {
            s.last_used = clock;
            return s.id;
        }
        let id = self.fresh_id();
        // An empty slot, else the least recently used one.
        let mut victim = 0;
        let mut oldest = u64::MAX;
        for (i, s) in self.slots.iter().enumerate() {
            let age = match s {
                None => {
                    victim = i;
                    break;
                }
                Some(s) => s.last_used,
            };
            if age < oldest {
                oldest = age;
                victim = i;
            }
        }
        if let Some(s) = self.slots.get_mut(victim) {
            *s = Some(Slot {
                id,
                plane: *p,
                last_used: clock,
            });
        }
        id
    }

    /// A non-zero id no remembered plane has (monotonic; after 2^32 − 1 ids
    /// it wraps, skipping live ones).
    fn fresh_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if id != 0 && !self.slots.iter().flatten().any(|s| s.id == id) {
                return id;
            }
        }
    }

    /// Forget every plane (vGPU reset); ids keep counting up, so an id
    /// handed out before is never reused for a different plane.
    pub fn clear(&mut self) {
        self.slots = [None; N];
        if self.current != 0 {
            self.changes = self.changes.wrapping_add(1);
        }
        self.current = 0;
    }
}

impl<const N: usize> Default for PlaneIds<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The host pages behind a plane, in surface order (one per GGTT entry of
/// [`Plane::ggtt_indices`]).
pub struct FramebufferPages<'g, 'a> {
    ggtt: &'g Ggtt<'a>,
    next: u64,
    end: u64,
}

impl Iterator for FramebufferPages<'_, '_> {
    type Item = HostPage;
    fn next(&mut self) -> Option<HostPage> {
        if self.next >= self.end {
            return None;
        }
        let i = self.next;
        self.next += 1;
        // In the slices (checked by `framebuffer_pages`): always Some.
        Some(self.ggtt.host_page(i).unwrap_or(self.ggtt.scratch()))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.end - self.next).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

/// The framebuffer page list of `plane` through `ggtt`, the shadow GGTT of
/// the vGPU that owns it: for each page of the surface, the host page the
/// physical GGTT maps there now (a pinned page of that guest, or that vGPU's
/// scratch page).  Refused if the plane is not inside `ggtt`'s slices (a
/// plane decoded for another vGPU), so it never names another vGPU's pages.
pub fn framebuffer_pages<'g, 'a>(
    plane: &Plane,
    ggtt: &'g Ggtt<'a>,
) -> Result<FramebufferPages<'g, 'a>, NoPlane> {
    if !in_one_slice(&ggtt.slices(), plane.surface, plane.mapped_size()) {
        return Err(NoPlane::SurfaceOutsideGm {
            surface: plane.surface,
            size: plane.size(),
        });
    }
    let r = plane.ggtt_indices();
    Ok(FramebufferPages {
        ggtt,
        next: r.start,
        end: r.end,
    })
}

/// Size of the display VFIO region of a vGPU owning `gm`: every plane
/// [`decode`] can accept fits (a plane lies in one slice and is at most
/// [`MAX_PLANE_BYTES`]), so the VMM's one mmap of the region never has to
/// grow when the guest changes mode (QEMU maps the region once per region
/// index).  Only address space: pages fault in on access.
pub fn display_region_size(gm: &VgpuGm) -> u64 {
    let largest = if gm.aperture.size > gm.high.size {
        gm.aperture.size
    } else {
        gm.high.size
    };
    let s = if largest < MAX_PLANE_BYTES {
        largest
    } else {
        MAX_PLANE_BYTES
    };
    s.div_ceil(PAGE_SIZE).saturating_mul(PAGE_SIZE)
}

/// Fault path of the display region (the same fault-in mapping as the
/// aperture): the host page that region page `page_index` maps — page
/// `page_index` of the current plane, or the vGPU's scratch page past the
/// plane (or with no plane), `None` past [`display_region_size`] (SIGBUS).
/// A plane outside `ggtt`'s slices maps scratch only.
pub fn region_fault(plane: Option<&Plane>, ggtt: &Ggtt<'_>, page_index: u64) -> Option<HostPage> {
    if page_index >= display_region_size(&ggtt.slices()) >> PAGE_SHIFT {
        return None;
    }
    let page = plane.and_then(|p| {
        if page_index >= p.pages() || !in_one_slice(&ggtt.slices(), p.surface, p.mapped_size()) {
            return None;
        }
        ggtt.host_page((p.surface >> PAGE_SHIFT).checked_add(page_index)?)
    });
    Some(page.unwrap_or(ggtt.scratch()))
}

/// Read `buf.len()` bytes of the display region at `offset` (a `read()` on
/// the region): through [`region_fault`], page by page.
pub fn region_read(
    plane: Option<&Plane>,
    ggtt: &Ggtt<'_>,
    mem: &impl HostMemory,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), MemError> {
    let mut pos = offset;
    let mut rest = buf;
    while !rest.is_empty() {
        let page = region_fault(plane, ggtt, pos >> PAGE_SHIFT).ok_or(MemError::OutOfRange)?;
        let in_page = (pos % PAGE_SIZE) as usize;
        let n = rest.len().min(PAGE_SIZE as usize - in_page);
        let (now, later) = rest.split_at_mut(n);
        mem.read(page, in_page, now)?;
        rest = later;
        pos = pos.checked_add(n as u64).ok_or(MemError::OutOfRange)?;
    }
    Ok(())
}

/// VFIO / DRM constants of `VFIO_DEVICE_QUERY_GFX_PLANE` (linux/vfio.h,
/// drm_mode.h).
pub mod vfio {
    pub const VFIO_GFX_PLANE_TYPE_PROBE: u32 = 1 << 0;
    pub const VFIO_GFX_PLANE_TYPE_DMABUF: u32 = 1 << 1;
    pub const VFIO_GFX_PLANE_TYPE_REGION: u32 = 1 << 2;
    pub const DRM_PLANE_TYPE_OVERLAY: u32 = 0;
    pub const DRM_PLANE_TYPE_PRIMARY: u32 = 1;
    pub const DRM_PLANE_TYPE_CURSOR: u32 = 2;
    /// `x_hot`/`y_hot` when there is no hotspot.
    pub const NO_HOTSPOT: u32 = 0xFFFF_FFFF;
}

/// Which plane kinds the kernel really implements (probes answer from this).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GfxCaps {
    pub region: bool,
    pub dmabuf: bool,
}

/// What a QUERY_GFX_PLANE call asks, from its `flags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GfxQuery {
    /// A probe for a supported kind: answer 0, fill nothing.
    ProbeOk,
    /// Describe the plane as a region plane.
    Region,
    /// Describe the plane as a dma-buf plane.
    DmaBuf,
}

/// `-EINVAL`: an unsupported kind, or a flag combination vfio.h calls invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidQuery;

impl GfxQuery {
    /// vfio.h: `PROBE|DMABUF` / `PROBE|REGION` ask whether that kind is
    /// supported (0 or -EINVAL); `DMABUF` or `REGION` alone query the plane;
    /// everything else is invalid.
    pub fn from_flags(flags: u32, caps: GfxCaps) -> Result<Self, InvalidQuery> {
        use vfio::*;
        let (probe, kind) = (
            flags & VFIO_GFX_PLANE_TYPE_PROBE != 0,
            flags & !VFIO_GFX_PLANE_TYPE_PROBE,
        );
        let supported = match kind {
            VFIO_GFX_PLANE_TYPE_DMABUF => caps.dmabuf,
            VFIO_GFX_PLANE_TYPE_REGION => caps.region,
            _ => false,
        };
        match (supported, probe, kind) {
            (false, _, _) => Err(InvalidQuery),
            (true, true, _) => Ok(GfxQuery::ProbeOk),
            (true, false, VFIO_GFX_PLANE_TYPE_DMABUF) => Ok(GfxQuery::DmaBuf),
            (true, false, _) => Ok(GfxQuery::Region),
        }
    }
}

/// The out fields of `struct vfio_device_gfx_plane_info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GfxPlaneInfo {
    pub drm_format: u32,
    pub drm_format_mod: u64,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    /// Bytes, page aligned.
    pub size: u32,
    pub x_pos: u32,
    pub y_pos: u32,
    pub x_hot: u32,
    pub y_hot: u32,
    /// `region_index` (region planes) or `dmabuf_id` (dma-buf planes).
    pub region_index_or_dmabuf_id: u32,
}

impl GfxPlaneInfo {
    /// "No plane": vfio.h's zero-initialised format, size, width and height.
    pub const NONE: GfxPlaneInfo = GfxPlaneInfo {
        drm_format: 0,
        drm_format_mod: 0,
        width: 0,
        height: 0,
        stride: 0,
        size: 0,
        x_pos: 0,
        y_pos: 0,
        x_hot: vfio::NO_HOTSPOT,
        y_hot: vfio::NO_HOTSPOT,
        region_index_or_dmabuf_id: 0,
    };

    /// Describe `plane` (with id `id`) for `query`; `region_index` is the
    /// display region's VFIO index.
    pub fn of(plane: &Plane, id: u32, query: GfxQuery, region_index: u32) -> Self {
        GfxPlaneInfo {
            drm_format: plane.format.drm_fourcc(),
            drm_format_mod: drm_format::MOD_LINEAR,
            width: plane.width,
            height: plane.height,
            stride: plane.stride,
            size: u32::try_from(plane.mapped_size()).unwrap_or(0),
            region_index_or_dmabuf_id: match query {
                GfxQuery::DmaBuf => id,
                _ => region_index,
            },
            ..Self::NONE
        }
    }
}

/// The whole answer to one QUERY_GFX_PLANE call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryAnswer {
    /// The out fields (meaningless for [`GfxQuery::ProbeOk`]).
    pub info: GfxPlaneInfo,
    /// The plane's identity now (`id` 0: no plane).
    pub observed: Observed,
    /// Why there is no primary plane, for the log (rate-limit on `observed.changed`).
    pub no_plane: Option<NoPlane>,
}

/// `VFIO_DEVICE_QUERY_GFX_PLANE`: decode the vGPU's plane from its vregs,
/// track its identity, describe it.  `Err` is `-EINVAL`.  Only the primary
/// plane exists (a cursor or overlay query answers "no plane").
pub fn query_gfx_plane<const N: usize>(
    flags: u32,
    drm_plane_type: u32,
    caps: GfxCaps,
    vregs: &[u32],
    gm: &VgpuGm,
    ids: &mut PlaneIds<N>,
    region_index: u32,
) -> Result<QueryAnswer, InvalidQuery> {
    let query = GfxQuery::from_flags(flags, caps)?;
    let unchanged = Observed {
        id: ids.current(),
        changed: false,
    };
    if query == GfxQuery::ProbeOk {
        return Ok(QueryAnswer {
            info: GfxPlaneInfo::NONE,
            observed: unchanged,
            no_plane: None,
        });
    }
    if drm_plane_type != vfio::DRM_PLANE_TYPE_PRIMARY {
        return Ok(QueryAnswer {
            info: GfxPlaneInfo::NONE,
            observed: unchanged,
            no_plane: None,
        });
    }
    let plane = decode_vregs(vregs, gm);
    let observed = ids.observe(plane.as_ref().ok());
    Ok(match plane {
        Ok(p) => QueryAnswer {
            info: GfxPlaneInfo::of(&p, observed.id, query, region_index),
            observed,
            no_plane: None,
        },
        Err(e) => QueryAnswer {
            info: GfxPlaneInfo::NONE,
            observed,
            no_plane: Some(e),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::fakes::{FakeGuestMemory, FakeHostMemory};
    use super::super::ggtt::tests::{FakePhysGgtt, RecordingCpu};
    use super::super::ggtt::PteWrite;
    use super::super::regs::VREG_DWORDS;
    use super::*;
    use proptest::prelude::*;
    use std::format;
    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    const P: u64 = PAGE_SIZE;
    const MIB: u64 = 1 << 20;

    /// vGPU A: aperture 1–3 MiB, high 64–80 MiB; vGPU B right next to it.
    fn gm_a() -> VgpuGm {
        VgpuGm {
            aperture: GmRange::new(MIB, 2 * MIB),
            high: GmRange::new(64 * MIB, 16 * MIB),
        }
    }
    fn gm_b() -> VgpuGm {
        VgpuGm {
            aperture: GmRange::new(3 * MIB, 2 * MIB),
            high: GmRange::new(80 * MIB, 16 * MIB),
        }
    }

    fn regs(fmt: u32, w: u32, h: u32, stride: u32, surf: u32) -> DisplayRegs {
        DisplayRegs {
            ctl: PlaneCtl(0).with_enable(true).with_format(fmt),
            stride,
            surf,
            src: PipeSrc(0)
                .with_width_minus_1(w - 1)
                .with_height_minus_1(h - 1),
            display_ready: 1,
        }
    }

    fn xrgb(w: u32, h: u32, surf: u64) -> DisplayRegs {
        regs(PlaneCtl::FORMAT_XRGB8888, w, h, w * 4, surf as u32)
    }

    #[test]
    fn formats_follow_intel_and_drm() {
        assert_eq!(drm_format::XRGB8888, 0x3432_5258, "'XR24' as drm_fourcc.h");
        assert_eq!(drm_format::ARGB8888, 0x3432_5241);
        assert_eq!(drm_format::RGB565, 0x3631_4752);
        for f in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_intel(f.intel()), Some(f));
        }
        let supported: Vec<u32> = (0..16)
            .filter(|&v| PixelFormat::from_intel(v).is_some())
            .collect();
        assert_eq!(supported, [5, 6, 7, 14, 15]);
        assert_eq!(PixelFormat::Rgb565.bytes_per_pixel(), 2);
        assert_eq!(PixelFormat::Xbgr8888.bytes_per_pixel(), 4);
    }

    #[test]
    fn a_good_plane_decodes() {
        let p = decode(&xrgb(1024, 768, 64 * MIB), &gm_a()).unwrap();
        assert_eq!(
            (p.width(), p.height(), p.stride(), p.surface()),
            (1024, 768, 4096, 64 * MIB)
        );
        assert_eq!(p.format(), PixelFormat::Xrgb8888);
        assert_eq!(p.size(), 3 * MIB);
        assert_eq!(p.pages(), 768);
        assert_eq!(p.ggtt_indices(), (64 * MIB / P)..(64 * MIB / P + 768));
        assert_eq!(p.pixel_offset(1, 2), Some(2 * 4096 + 4));
        assert_eq!(p.pixel_offset(1024, 0), None);
        // RGB565, stride rounded up to 64 bytes, partial last page
        let p = decode(&regs(5, 100, 3, 256, MIB as u32), &gm_a()).unwrap();
        assert_eq!((p.size(), p.mapped_size(), p.pages()), (768, P, 1));
        // a surface may fill its slice exactly
        let p = decode(&xrgb(1024, 512, MIB), &gm_a()).unwrap();
        assert_eq!(p.gm_range(), gm_a().aperture);
    }

    #[test]
    fn each_rule_has_its_reason() {
        let gm = gm_a();
        let good = xrgb(1024, 768, 64 * MIB);
        let d = |r: DisplayRegs| decode(&r, &gm);
        assert_eq!(
            d(DisplayRegs {
                display_ready: 0,
                ..good
            }),
            Err(NoPlane::DisplayNotReady)
        );
        assert_eq!(
            d(DisplayRegs {
                ctl: good.ctl.with_enable(false),
                ..good
            }),
            Err(NoPlane::PlaneDisabled)
        );
        assert_eq!(
            d(DisplayRegs {
                ctl: good.ctl.with_format(2),
                ..good
            }),
            Err(NoPlane::UnsupportedFormat(2))
        );
        assert_eq!(
            d(DisplayRegs {
                ctl: PlaneCtl(good.ctl.0 | PLANE_CTL_TILED),
                ..good
            }),
            Err(NoPlane::Tiled)
        );
        assert_eq!(
            d(DisplayRegs {
                stride: 4096 + 32,
                ..good
            }),
            Err(NoPlane::StrideMisaligned(4128))
        );
        assert_eq!(
            d(DisplayRegs {
                stride: MAX_STRIDE + 64,
                ..good
            }),
            Err(NoPlane::StrideTooLarge(MAX_STRIDE + 64))
        );
        assert_eq!(
            d(DisplayRegs {
                stride: 4096 - 64,
                ..good
            }),
            Err(NoPlane::StrideTooSmall {
                stride: 4032,
                min: 4096
            })
        );
        assert_eq!(
            d(DisplayRegs { stride: 0, ..good }),
            Err(NoPlane::StrideTooSmall {
                stride: 0,
                min: 4096
            })
        );
        assert_eq!(
            d(DisplayRegs {
                surf: good.surf + 64,
                ..good
            }),
            Err(NoPlane::SurfaceMisaligned(good.surf + 64))
        );
        // every failure explains itself
        for e in [
            NoPlane::DisplayNotReady,
            NoPlane::StrideTooSmall { stride: 1, min: 2 },
        ] {
            assert!(!format!("{e}").is_empty() && !e.reason().is_empty());
        }
        assert!(NoPlane::DisplayNotReady
            .to_string()
            .contains("display_ready"));
    }

    #[test]
    fn surfaces_outside_the_own_slices_are_refused() {
        let gm = gm_a();
        let outside = |surf: u64, w: u32, h: u32| {
            matches!(
                decode(&xrgb(w, h, surf), &gm),
                Err(NoPlane::SurfaceOutsideGm { .. })
            )
        };
        assert!(
            outside(0, 64, 64),
            "below the aperture slice (host / other vGPU)"
        );
        assert!(outside(3 * MIB, 64, 64), "vGPU B's aperture slice");
        assert!(outside(80 * MIB, 64, 64), "vGPU B's high slice");
        assert!(
            outside(3 * MIB - P, 1024, 2),
            "runs off the end of the aperture slice by one page"
        );
        assert!(
            outside(80 * MIB - P, 1024, 1 + 1),
            "runs from A's high slice into B's"
        );
        assert!(
            outside(0xFFFF_F000, 1024, 768),
            "near the top of the address space"
        );
        assert!(
            !outside(3 * MIB - P, 1024, 1),
            "the last page of the slice is fine"
        );
        // the same registers are a valid plane of B, and not of A
        let r = xrgb(64, 64, 3 * MIB);
        assert!(decode(&r, &gm_b()).is_ok());
        // a slice pair that is adjacent still does not let a plane span both
        let adj = VgpuGm {
            aperture: GmRange::new(0, MIB),
            high: GmRange::new(MIB, MIB),
        };
        assert!(matches!(
            decode(&xrgb(1024, 2, MIB - P), &adj),
            Err(NoPlane::SurfaceOutsideGm { .. })
        ));
    }

    #[test]
    fn decode_reads_the_vreg_file_and_pvinfo() {
        let mut v = vec![0u32; VREG_DWORDS];
        assert_eq!(decode_vregs(&v, &gm_a()), Err(NoPlane::DisplayNotReady));
        v[DISPLAY_READY_VREG] = super::super::pvinfo::VGT_DRV_DISPLAY_READY;
        assert_eq!(decode_vregs(&v, &gm_a()), Err(NoPlane::PlaneDisabled));
        let r = xrgb(640, 480, MIB);
        v[regs::fixed_index(DSPACNTR)] = r.ctl.0;
        v[regs::fixed_index(DSPASTRIDE)] = r.stride;
        v[regs::fixed_index(DSPASURF)] = r.surf;
        v[regs::fixed_index(PIPEASRC)] = r.src.0;
        let p = decode_vregs(&v, &gm_a()).unwrap();
        assert_eq!((p.width(), p.height(), p.surface()), (640, 480, MIB));
        assert_eq!(DisplayRegs::from_vregs(&v), r);
        // a short vreg slice is all zeros
        assert_eq!(
            decode_vregs(&v[..16], &gm_a()),
            Err(NoPlane::DisplayNotReady)
        );
    }

    fn plane(surf: u64) -> Plane {
        decode(&xrgb(64, 64, surf), &gm_a()).unwrap()
    }

    #[test]
    fn ids_are_stable_change_with_the_plane_and_come_back() {
        let mut ids = PlaneIds::<4>::new();
        let (a, b) = (plane(MIB), plane(MIB + 16 * P));
        let o = ids.observe(Some(&a));
        assert!(o.changed && o.id != 0);
        let ida = o.id;
        assert_eq!(
            ids.observe(Some(&a)),
            Observed {
                id: ida,
                changed: false
            }
        );
        let idb = ids.observe(Some(&b)).id;
        assert_ne!(idb, ida);
        assert_eq!(
            ids.observe(Some(&a)),
            Observed {
                id: ida,
                changed: true
            },
            "flip back: same id"
        );
        assert_eq!(
            ids.observe(None),
            Observed {
                id: 0,
                changed: true
            }
        );
        assert_eq!(
            ids.observe(None),
            Observed {
                id: 0,
                changed: false
            }
        );
        assert_eq!(
            ids.observe(Some(&b)).id,
            idb,
            "re-enabled unchanged: same id"
        );
        assert_eq!(ids.lookup(ida), Some(a));
        assert_eq!(ids.lookup(idb), Some(b));
        assert_eq!(ids.lookup(0), None);
        // any change of format, size or stride is a new plane
        let r = xrgb(64, 64, MIB);
        let variants = [
            DisplayRegs {
                ctl: r.ctl.with_format(7),
                ..r
            },
            DisplayRegs {
                src: r.src.with_height_minus_1(62),
                ..r
            },
            DisplayRegs {
                src: r.src.with_width_minus_1(47),
                ..r
            },
            DisplayRegs { stride: 512, ..r },
        ];
        let mut seen = vec![ida, idb];
        for v in variants {
            let id = ids.observe(Some(&decode(&v, &gm_a()).unwrap())).id;
            assert!(!seen.contains(&id), "{v:?}");
            seen.push(id);
        }
        // LRU eviction: 6 planes through 4 slots; an evicted plane gets a new id
        assert_eq!(ids.lookup(ida), None);
        let again = ids.observe(Some(&a)).id;
        assert!(!seen.contains(&again));
        assert_eq!(ids.changes(), 10);
        ids.clear();
        assert_eq!(ids.current(), 0);
        assert!(ids.lookup(again).is_none());
        assert!(
            ids.observe(Some(&a)).id > again,
            "ids keep counting after a reset"
        );
    }

    #[test]
    fn fresh_ids_skip_zero_and_live_ids_on_wrap() {
        let mut ids = PlaneIds::<2>::new();
        ids.next_id = u32::MAX;
        assert_eq!(ids.observe(Some(&plane(MIB))).id, u32::MAX);
        assert_eq!(ids.observe(Some(&plane(MIB + P))).id, 1, "0 is never an id");
        ids.next_id = u32::MAX;
        // MAX and 1 are still remembered, 0 is never used: the next is 2
        assert_eq!(ids.observe(Some(&plane(MIB + 2 * P))).id, 2);
        assert_eq!(ids.observe(Some(&plane(MIB + 3 * P))).id, 3);
        // both old planes are forgotten now, so MAX may be given again
        ids.next_id = u32::MAX;
        assert_eq!(ids.lookup(u32::MAX), None);
        assert_eq!(ids.observe(Some(&plane(MIB + 4 * P))).id, u32::MAX);
    }

    /// Two vGPUs on one physical GGTT, each with every entry mapped to its own
    /// guest memory: A's guest frames 0x1000.. → host pages 1000.., B's →
    /// host pages 5000...
    struct TwoVgpus {
        be: FakePhysGgtt,
        ga: FakeGuestMemory,
        gb: FakeGuestMemory,
        a: (Vec<u64>, Vec<u64>),
        b: (Vec<u64>, Vec<u64>),
    }

    const SCRATCH_A: HostPage = HostPage(1);
    const SCRATCH_B: HostPage = HostPage(2);

    fn host_of_a(p: HostPage) -> bool {
        p == SCRATCH_A || (1000..1000 + 4608).contains(&p.0)
    }

    impl TwoVgpus {
        fn new() -> Self {
            let (na, nb) = (gm_a().entries(), gm_b().entries());
            TwoVgpus {
                be: FakePhysGgtt::new((96 * MIB / P) as u32),
                ga: FakeGuestMemory::new(0x1000, 4608, 1000),
                gb: FakeGuestMemory::new(0x1000, 4608, 10_000),
                a: (vec![0; na], vec![0; na]),
                b: (vec![0; nb], vec![0; nb]),
            }
        }
    }

    /// Map every entry of `ggtt`'s slices to consecutive guest frames from 0x1000.
    fn map_all(ggtt: &mut Ggtt<'_>, g: &mut FakeGuestMemory, be: &mut FakePhysGgtt) {
        let s = ggtt.slices();
        let idx =
            (s.aperture.base / P..s.aperture.end() / P).chain(s.high.base / P..s.high.end() / P);
        for (n, i) in idx.enumerate() {
            let w = ggtt.write_pte(
                g,
                be,
                &mut RecordingCpu::default(),
                i,
                ((0x1000 + n as u64) << 12) | 1,
            );
            assert_eq!(w, PteWrite::Mapped);
        }
    }

    #[test]
    fn framebuffer_pages_follow_the_shadow_ggtt_and_refuse_foreign_planes() {
        let mut t = TwoVgpus::new();
        let mut ggtt_a = Ggtt::new(gm_a(), SCRATCH_A, &mut t.a.0, &mut t.a.1, &mut t.be).unwrap();
        let mut ggtt_b = Ggtt::new(gm_b(), SCRATCH_B, &mut t.b.0, &mut t.b.1, &mut t.be).unwrap();
        map_all(&mut ggtt_a, &mut t.ga, &mut t.be);
        map_all(&mut ggtt_b, &mut t.gb, &mut t.be);
        let p = decode(&xrgb(1024, 4, MIB + 2 * P), &gm_a()).unwrap();
        let pages: Vec<HostPage> = framebuffer_pages(&p, &ggtt_a).unwrap().collect();
        assert_eq!(
            pages,
            [
                HostPage(1002),
                HostPage(1003),
                HostPage(1004),
                HostPage(1005)
            ]
        );
        assert_eq!(
            framebuffer_pages(&p, &ggtt_a).unwrap().size_hint(),
            (4, Some(4))
        );
        // unmapping a guest PTE under the surface shows scratch, never anything else
        ggtt_a.write_pte(
            &mut t.ga,
            &mut t.be,
            &mut RecordingCpu::default(),
            MIB / P + 3,
            0,
        );
        let pages: Vec<HostPage> = framebuffer_pages(&p, &ggtt_a).unwrap().collect();
        assert_eq!(pages[1], SCRATCH_A);
        // A's plane through B's GGTT: refused
        assert!(matches!(
            framebuffer_pages(&p, &ggtt_b),
            Err(NoPlane::SurfaceOutsideGm { .. })
        ));
        // the region: plane pages, then scratch, then the end
        let size = display_region_size(&gm_a());
        assert_eq!(size, 16 * MIB, "largest slice");
        assert_eq!(region_fault(Some(&p), &ggtt_a, 0), Some(HostPage(1002)));
        assert_eq!(region_fault(Some(&p), &ggtt_a, 4), Some(SCRATCH_A));
        assert_eq!(region_fault(None, &ggtt_a, 0), Some(SCRATCH_A));
        assert_eq!(
            region_fault(Some(&p), &ggtt_a, size / P - 1),
            Some(SCRATCH_A)
        );
        assert_eq!(region_fault(Some(&p), &ggtt_a, size / P), None);
        assert_eq!(
            region_fault(Some(&p), &ggtt_b, 0),
            Some(SCRATCH_B),
            "foreign plane maps scratch only"
        );
        assert_eq!(region_fault(Some(&p), &ggtt_a, u64::MAX), None);
    }

    #[test]
    fn pixels_written_into_guest_pages_are_read_through_the_region() {
        let mut t = TwoVgpus::new();
        let mut ggtt_a = Ggtt::new(gm_a(), SCRATCH_A, &mut t.a.0, &mut t.a.1, &mut t.be).unwrap();
        map_all(&mut ggtt_a, &mut t.ga, &mut t.be);
        let mut host = FakeHostMemory::new(6000);
        // the guest draws: pixel (x, y) = y << 16 | x, XRGB8888 at 64 MiB, stride 2048 (width 300)
        let p = decode(&regs(6, 300, 20, 2048, (64 * MIB) as u32), &gm_a()).unwrap();
        let pages: Vec<HostPage> = framebuffer_pages(&p, &ggtt_a).unwrap().collect();
        for y in 0..20u32 {
            for x in 0..300u32 {
                let off = p.pixel_offset(x, y).unwrap();
                let page = pages[(off / P) as usize];
                host.write(page, (off % P) as usize, &((y << 16) | x).to_le_bytes())
                    .unwrap();
            }
        }
        // the VMM reads row 13 through the region (crossing a page boundary)
        let mut row = vec![0u8; 1200];
        region_read(Some(&p), &ggtt_a, &host, 13 * 2048, &mut row).unwrap();
        for x in 0..300u32 {
            let px = u32::from_le_bytes(row[x as usize * 4..][..4].try_into().unwrap());
            assert_eq!(px, (13 << 16) | x);
        }
        let mut last = [0u8; 8];
        assert!(
            region_read(Some(&p), &ggtt_a, &host, 16 * MIB - 4, &mut last).is_err(),
            "past the region"
        );
    }

    #[test]
    fn query_flags_and_probes_are_truthful() {
        use vfio::*;
        let both = GfxCaps {
            region: true,
            dmabuf: true,
        };
        let region = GfxCaps {
            region: true,
            dmabuf: false,
        };
        let q = GfxQuery::from_flags;
        assert_eq!(
            q(
                VFIO_GFX_PLANE_TYPE_PROBE | VFIO_GFX_PLANE_TYPE_REGION,
                region
            ),
            Ok(GfxQuery::ProbeOk)
        );
        assert_eq!(
            q(
                VFIO_GFX_PLANE_TYPE_PROBE | VFIO_GFX_PLANE_TYPE_DMABUF,
                region
            ),
            Err(InvalidQuery)
        );
        assert_eq!(
            q(VFIO_GFX_PLANE_TYPE_PROBE | VFIO_GFX_PLANE_TYPE_DMABUF, both),
            Ok(GfxQuery::ProbeOk)
        );
        assert_eq!(q(VFIO_GFX_PLANE_TYPE_DMABUF, region), Err(InvalidQuery));
        assert_eq!(q(VFIO_GFX_PLANE_TYPE_DMABUF, both), Ok(GfxQuery::DmaBuf));
        assert_eq!(q(VFIO_GFX_PLANE_TYPE_REGION, both), Ok(GfxQuery::Region));
        assert_eq!(q(VFIO_GFX_PLANE_TYPE_PROBE, both), Err(InvalidQuery));
        assert_eq!(q(0, both), Err(InvalidQuery));
        assert_eq!(
            q(
                VFIO_GFX_PLANE_TYPE_DMABUF | VFIO_GFX_PLANE_TYPE_REGION,
                both
            ),
            Err(InvalidQuery)
        );
        assert_eq!(q(VFIO_GFX_PLANE_TYPE_PROBE | 6, both), Err(InvalidQuery));
        assert_eq!(q(VFIO_GFX_PLANE_TYPE_REGION | 8, both), Err(InvalidQuery));
        assert_eq!(
            q(VFIO_GFX_PLANE_TYPE_REGION, GfxCaps::default()),
            Err(InvalidQuery)
        );
    }

    #[test]
    fn query_describes_the_plane_or_says_why_not() {
        use vfio::*;
        let caps = GfxCaps {
            region: true,
            dmabuf: true,
        };
        let mut ids = PlaneIds::<4>::new();
        let mut v = vec![0u32; VREG_DWORDS];
        let q = |v: &[u32], ids: &mut PlaneIds<4>, flags, ty| {
            query_gfx_plane(flags, ty, caps, v, &gm_a(), ids, 9)
        };
        let a = q(
            &v,
            &mut ids,
            VFIO_GFX_PLANE_TYPE_REGION,
            DRM_PLANE_TYPE_PRIMARY,
        )
        .unwrap();
        assert_eq!(a.info, GfxPlaneInfo::NONE);
        assert_eq!(
            (a.info.drm_format, a.info.size, a.info.width, a.info.height),
            (0, 0, 0, 0)
        );
        assert_eq!(a.no_plane, Some(NoPlane::DisplayNotReady));
        assert_eq!(
            a.observed,
            Observed {
                id: 0,
                changed: false
            }
        );
        v[DISPLAY_READY_VREG] = 1;
        let r = xrgb(1024, 768, 64 * MIB);
        v[regs::fixed_index(DSPACNTR)] = r.ctl.0;
        v[regs::fixed_index(DSPASTRIDE)] = r.stride;
        v[regs::fixed_index(DSPASURF)] = r.surf;
        v[regs::fixed_index(PIPEASRC)] = r.src.0;
        let a = q(
            &v,
            &mut ids,
            VFIO_GFX_PLANE_TYPE_REGION,
            DRM_PLANE_TYPE_PRIMARY,
        )
        .unwrap();
        assert_eq!(a.no_plane, None);
        assert!(a.observed.changed);
        let want = GfxPlaneInfo {
            drm_format: drm_format::XRGB8888,
            drm_format_mod: 0,
            width: 1024,
            height: 768,
            stride: 4096,
            size: 3 << 20,
            x_pos: 0,
            y_pos: 0,
            x_hot: NO_HOTSPOT,
            y_hot: NO_HOTSPOT,
            region_index_or_dmabuf_id: 9,
        };
        assert_eq!(a.info, want);
        let d = q(
            &v,
            &mut ids,
            VFIO_GFX_PLANE_TYPE_DMABUF,
            DRM_PLANE_TYPE_PRIMARY,
        )
        .unwrap();
        assert_eq!(
            d.info,
            GfxPlaneInfo {
                region_index_or_dmabuf_id: a.observed.id,
                ..want
            }
        );
        assert!(!d.observed.changed);
        assert_eq!(
            ids.lookup(d.info.region_index_or_dmabuf_id)
                .map(|p| p.surface()),
            Some(64 * MIB)
        );
        // cursor: no plane, identity untouched
        let c = q(
            &v,
            &mut ids,
            VFIO_GFX_PLANE_TYPE_DMABUF,
            DRM_PLANE_TYPE_CURSOR,
        )
        .unwrap();
        assert_eq!(c.info, GfxPlaneInfo::NONE);
        assert_eq!(
            c.observed,
            Observed {
                id: a.observed.id,
                changed: false
            }
        );
        // a flip to another vGPU's memory: no plane, and the reason
        v[regs::fixed_index(DSPASURF)] = (80 * MIB) as u32;
        let f = q(
            &v,
            &mut ids,
            VFIO_GFX_PLANE_TYPE_DMABUF,
            DRM_PLANE_TYPE_PRIMARY,
        )
        .unwrap();
        assert_eq!(f.info, GfxPlaneInfo::NONE);
        assert!(f.observed.changed);
        assert!(matches!(f.no_plane, Some(NoPlane::SurfaceOutsideGm { .. })));
        assert_eq!(
            q(
                &v,
                &mut ids,
                VFIO_GFX_PLANE_TYPE_PROBE,
                DRM_PLANE_TYPE_PRIMARY
            ),
            Err(InvalidQuery)
        );
    }

    fn any_regs() -> impl Strategy<Value = DisplayRegs> {
        // Mix fully random values with near-valid ones so every rule is hit.
        let surf = prop_oneof![
            any::<u32>(),
            (0u32..(100 * MIB / P) as u32).prop_map(|p| p << 12),
            (0u32..4096).prop_map(|d| (3 * MIB as u32).wrapping_sub(d * 4096)),
            (0u32..4096).prop_map(|d| (80 * MIB as u32).wrapping_sub(d * 4096)),
        ];
        let stride = prop_oneof![any::<u32>(), (0u32..130).prop_map(|s| s * 64)];
        let ctl = prop_oneof![
            any::<u32>(),
            (0u32..16).prop_map(|f| PlaneCtl(0).with_enable(true).with_format(f).0)
        ];
        let src = prop_oneof![
            any::<u32>(),
            (0u32..2048, 0u32..1024).prop_map(|(w, h)| (w << 16) | h)
        ];
        let mixed = (
            ctl,
            stride,
            surf,
            src,
            prop_oneof![Just(1u32), Just(0), any::<u32>()],
        )
            .prop_map(|(c, st, su, src, rdy)| DisplayRegs {
                ctl: PlaneCtl(c),
                stride: st,
                surf: su,
                src: PipeSrc(src),
                display_ready: rdy,
            });
        // Coherent planes (right stride for the width) anywhere near A's and
        // B's slices, so that the GM rule decides.
        let fmt = prop_oneof![Just(5u32), Just(6), Just(7), Just(14), Just(15)];
        let coherent = (
            fmt,
            1u32..2048,
            1u32..1024,
            0u32..4,
            0u32..(100 * MIB / P) as u32,
        )
            .prop_map(|(f, w, h, extra, page)| {
                let bpp = PixelFormat::from_intel(f).map_or(4, |x| x.bytes_per_pixel());
                let stride = (w * bpp).div_ceil(64) * 64 + extra * 64;
                regs(f, w, h, stride, page << 12)
            });
        prop_oneof![mixed, coherent]
    }

    /// The generator is not vacuous: it makes valid planes and hits every rule.
    #[test]
    fn register_generator_covers_every_outcome() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strat = any_regs();
        let mut ok = 0;
        let mut reasons = std::collections::BTreeSet::new();
        for _ in 0..4000 {
            let r = strat.new_tree(&mut runner).unwrap().current();
            match decode(&r, &gm_a()) {
                Ok(_) => ok += 1,
                Err(e) => {
                    reasons.insert(e.reason());
                }
            }
        }
        assert!(ok >= 200, "only {ok} valid planes in 4000");
        assert_eq!(reasons.len(), 9, "{reasons:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Arbitrary register values: never a panic, and a plane (if any) lies
        /// entirely inside one of its owner's slices, is consistent, and is
        /// never inside the neighbour's.
        #[test]
        fn decoded_planes_stay_in_the_owner_slices(r in any_regs()) {
            match decode(&r, &gm_a()) {
                Ok(p) => {
                    let a = gm_a();
                    let range = p.gm_range();
                    prop_assert!(a.aperture.contains(range.base, range.size) || a.high.contains(range.base, range.size));
                    prop_assert!(!range.overlaps(&gm_b().aperture) && !range.overlaps(&gm_b().high));
                    for i in p.ggtt_indices() {
                        prop_assert!(a.contains(i * P));
                    }
                    prop_assert!(p.stride() % STRIDE_ALIGN == 0 && p.stride() <= MAX_STRIDE);
                    prop_assert!(u64::from(p.stride()) >= u64::from(p.width()) * u64::from(p.format().bytes_per_pixel()));
                    prop_assert!(p.size() <= MAX_PLANE_BYTES && p.mapped_size() <= display_region_size(&a));
                    prop_assert_eq!(p.surface() % P, 0);
                    prop_assert!(r.display_ready != 0 && r.ctl.enable());
                }
                Err(e) => prop_assert!(!e.reason().is_empty()),
            }
        }

    }

    proptest! {
        // Each case builds two shadow GGTTs with 9216 mapped entries: keep it short.
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Through real shadow GGTTs: a plane decoded from arbitrary registers
        /// of A only ever yields A's pages (its guest's or its scratch), by
        /// page list and by region fault.
        #[test]
        fn a_vgpu_never_shows_another_vgpus_pages(rs in proptest::collection::vec(any_regs(), 1..40)) {
            let mut t = TwoVgpus::new();
            let mut ggtt_a = Ggtt::new(gm_a(), SCRATCH_A, &mut t.a.0, &mut t.a.1, &mut t.be).unwrap();
            let mut ggtt_b = Ggtt::new(gm_b(), SCRATCH_B, &mut t.b.0, &mut t.b.1, &mut t.be).unwrap();
            map_all(&mut ggtt_a, &mut t.ga, &mut t.be);
            map_all(&mut ggtt_b, &mut t.gb, &mut t.be);
            let mut ids = PlaneIds::<2>::new();
            for r in rs {
                let plane = decode(&r, &gm_a()).ok();
                ids.observe(plane.as_ref());
                if let Some(p) = plane {
                    for page in framebuffer_pages(&p, &ggtt_a).unwrap() {
                        prop_assert!(host_of_a(page), "{:?}", page);
                    }
                    prop_assert!(framebuffer_pages(&p, &ggtt_b).is_err());
                }
                for pg in [0, 1, 767, 768, 4095] {
                    if let Some(page) = region_fault(plane.as_ref(), &ggtt_a, pg) {
                        prop_assert!(host_of_a(page), "{:?}", page);
                    }
                }
                if let Some(p) = ids.lookup(ids.current()) {
                    prop_assert_eq!(Some(p), plane);
                }
            }
        }

    }

    proptest! {
        /// Identity: equal planes ⇔ equal ids (for planes still remembered).
        #[test]
        fn ids_match_plane_equality(seq in proptest::collection::vec(0usize..6, 1..60)) {
            let planes: Vec<Option<Plane>> = (0..6u64)
                .map(|k| if k == 5 { None } else { Some(plane(MIB + k * P)) })
                .collect();
            let mut ids = PlaneIds::<8>::new();
            let mut given: Vec<(Option<Plane>, u32)> = Vec::new();
            let mut prev = 0;
            for k in seq {
                let o = ids.observe(planes[k].as_ref());
                prop_assert_eq!(o.changed, o.id != prev);
                prev = o.id;
                prop_assert_eq!(o.id == 0, planes[k].is_none());
                for (q, id) in &given {
                    prop_assert_eq!(*q == planes[k], *id == o.id);
                }
                given.retain(|(q, _)| *q != planes[k]);
                given.push((planes[k], o.id));
            }
        }
    }
}
