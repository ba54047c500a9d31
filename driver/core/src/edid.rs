//! The vGPU's virtual monitor (paper §3.2 "Display management": each VM sees
//! its own display, sized by its vGPU type): an EDID 1.4 generator and parser,
//! the VFIO EDID region (`VFIO_REGION_TYPE_GFX` / `VFIO_REGION_SUBTYPE_GFX_EDID`,
//! `struct vfio_region_gfx_edid` of linux/vfio.h) through which the VMM sets
//! the monitor and plugs/unplugs it, and the guest's view of that monitor.
//!
//! **Default monitor.** [`EdidRegion::new`] starts connected with a generated
//! EDID ([`generate`]) whose preferred (first detailed) timing is the vGPU
//! type's resolution at 60 Hz with VESA CVT reduced-blanking v1 timings
//! ([`Mode::cvt_rb`]; 1024x768 → 56.00 MHz 1184x790, 1920x1200 → 154.00 MHz
//! 2080x1235 — the same timing GVT-g's 1920x1200 EDID carries), monitor name
//! "gvt-rs", a range-limits descriptor, vendor "GVT", sRGB, 100 DPI.
//!
//! **VFIO region** ([`EdidRegion::read`]/[`EdidRegion::write`]), laid out like
//! GVT-g's and mbochs': the six `u32` registers at 0, the blob at
//! [`EDID_BLOB_OFFSET`] (2 KiB), [`EDID_MAX_SIZE`] bytes, region size
//! [`EDID_REGION_SIZE`] (2560: it ends with the blob).  Every byte of the
//! region reads, in accesses of any size and alignment: the registers as
//! their little-endian values, the reserved bytes between them and the blob
//! as zeros.  Writes to registers take aligned 4-byte accesses only (the
//! reserved bytes take none);
//! `edid_offset`, `edid_max_size`, `max_xres`, `max_yres` are read-only
//! (`-EPERM`, as GVT-g); `edid_size` takes values ≤ `edid_max_size`
//! (`-EINVAL` otherwise); `link_state` takes `UP` (1) or `DOWN` (2)
//! (`-EINVAL` otherwise).  The blob is read/write anywhere inside
//! `edid_max_size`.  vfio.h's update protocol is link down → write blob and
//! size → link up; the guest only ever sees the EDID latched by the last
//! accepted link-up, so a half-written blob is never visible.
//!
//! **Link up** validates `blob[..edid_size]` before accepting (`-EINVAL`,
//! state unchanged, otherwise): exact header, version 1, every block's
//! checksum, `edid_size == 128 × (1 + extension count)`, a preferred detailed
//! timing in the first descriptor (mandatory in EDID 1.4; progressive), and
//! that mode no larger than `max_xres`×`max_yres` (the type's resolution,
//! GVT-g's `vgpu_edid_xres/yres`: its framebuffer must fit the vGPU's GM).
//! Every accepted `link_state` write is a hotplug event ([`EdidEvent`]) the
//! kernel forwards to the guest; the preferred mode of the latched EDID is the
//! mode offered to the guest ([`EdidRegion::mode`]).
//!
//! **Guest view.** Intel guests read EDID over GMBUS/DP-AUX, which gvt-sim does
//! not model; gvt-sim instead shows the monitor in a read-only page of BAR0
//! right after PVINFO ([`guest`]: EDID bytes, connected bit, hotplug counter,
//! the preferred mode in PIPEASRC encoding).  [`EdidRegion::mirror_into`]
//! writes it into the vGPU's vreg file; the kernel calls it at creation, on
//! every hotplug event and after a vGPU reset.

use super::vgpu_types::Resolution;

/// Bytes per EDID block.
pub const EDID_BLOCK: usize = 128;
/// The fixed EDID header.
pub const EDID_HEADER: [u8; 8] = [0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00];
/// Largest EDID the region takes (base block + 3 extensions).
pub const EDID_MAX_SIZE: usize = 4 * EDID_BLOCK;
/// Size of the VFIO EDID region: the registers, the reserved space up to
/// the blob, the blob; every byte of it reads ([`EdidRegion::read`]).
pub const EDID_REGION_SIZE: u64 = EDID_BLOB_OFFSET as u64 + EDID_MAX_SIZE as u64;
/// Where the blob starts in the region (GVT-g's and mbochs' `PAGE_SIZE / 2`).
pub const EDID_BLOB_OFFSET: u32 = 2048;
/// `VFIO_DEVICE_GFX_LINK_STATE_UP`.
pub const LINK_STATE_UP: u32 = 1;
/// `VFIO_DEVICE_GFX_LINK_STATE_DOWN`.
pub const LINK_STATE_DOWN: u32 = 2;
/// The refresh rate of generated modes.
pub const DEFAULT_REFRESH_HZ: u32 = 60;
/// Monitor name of generated EDIDs.
pub const MONITOR_NAME: &[u8] = b"gvt-rs";

/// `offsetof(struct vfio_region_gfx_edid, field)`.
pub mod regs {
    pub const EDID_OFFSET: u32 = 0;
    pub const EDID_MAX_SIZE: u32 = 4;
    pub const EDID_SIZE: u32 = 8;
    pub const MAX_XRES: u32 = 12;
    pub const MAX_YRES: u32 = 16;
    pub const LINK_STATE: u32 = 20;
    /// `sizeof(struct vfio_region_gfx_edid)`.
    pub const SIZE: u32 = 24;
}

/// Why an EDID (or a mode) was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdidError {
    /// Fewer than 128 bytes.
    TooShort,
    /// The 8-byte header is not `00 FF FF FF FF FF FF 00`.
    BadHeader,
    /// The base block's version is not 1.
    BadVersion(u8),
    /// Block `block`'s bytes do not sum to 0 mod 256.
    BadChecksum { block: usize },
    /// Block `block` is all zeros (Linux: `EDID_BLOCK_ZERO`).
    EmptyBlock { block: usize },
    /// The size is not 128 × (1 + the base block's extension count).
    SizeMismatch { expected: usize, got: usize },
    /// The first descriptor is not a detailed timing (no preferred mode).
    NoPreferredTiming,
    /// The preferred timing is interlaced (gvt-sim's pipe is progressive).
    Interlaced,
    /// The preferred timing is inconsistent (zero size or clock, porches
    /// wider than the blanking).
    BadTiming,
    /// The mode does not fit an EDID detailed timing / range descriptor.
    Unrepresentable,
}

/// A display timing (what a detailed timing descriptor holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    pub width: u32,
    pub height: u32,
    /// Pixel clock, kHz (a DTD holds multiples of 10 kHz).
    pub clock_khz: u32,
    pub h_sync_start: u32,
    pub h_sync_end: u32,
    pub h_total: u32,
    pub v_sync_start: u32,
    pub v_sync_end: u32,
    pub v_total: u32,
    pub hsync_positive: bool,
    pub vsync_positive: bool,
}

impl Mode {
    /// VESA CVT 1.2 reduced-blanking (v1) timing for `width`×`height` at
    /// `refresh_hz`: H blank 160 px (front porch 48, sync 32), V front porch
    /// 3 lines, V sync 4/5/6/7/7/10 lines for 4:3/16:9/16:10/5:4/15:9/other,
    /// vertical blanking ≥ 460 µs and ≥ 3 + sync + 6 lines, pixel clock
    /// rounded down to 250 kHz, +hsync −vsync.  (CVT also rounds the width
    /// to 8 pixels; a virtual monitor keeps the width asked for.)
    pub fn cvt_rb(width: u32, height: u32, refresh_hz: u32) -> Result<Mode, EdidError> {
        if width == 0 || height == 0 || refresh_hz == 0 || width > 4095 || height > 4095 {
            return Err(EdidError::Unrepresentable);
        }
        let (w, h) = (u64::from(width), u64::from(height));
        let v_sync = if w * 3 == h * 4 {
            4
        } else if w * 9 == h * 16 {
            5
        } else if w * 10 == h * 16 {
            6
        } else if w * 4 == h * 5 || w * 9 == h * 15 {
            7
        } else {
            10
        };
        // Picoseconds: the field period less the minimum vertical blanking,
        // per active line (CVT's H_PERIOD_EST, µs in the spec).
        const MIN_VBLANK_PS: u64 = 460_000_000;
        let field_ps = 1_000_000_000_000 / u64::from(refresh_hz);
        let h_period_est = field_ps
            .checked_sub(MIN_VBLANK_PS)
            .ok_or(EdidError::Unrepresentable)?
            / h;
        if h_period_est == 0 {
            return Err(EdidError::Unrepresentable);
        }
        let vbi_lines = MIN_VBLANK_PS / h_period_est + 1;
        let v_blank = vbi_lines.max(3 + v_sync + 6);
        let v_total = h + v_blank;
        let h_total = w + 160;
        let clock_khz = (u64::from(refresh_hz) * v_total * h_total / 250_000) * 250;
        let mode = Mode {
            width,
            height,
            clock_khz: u32::try_from(clock_khz).map_err(|_| EdidError::Unrepresentable)?,
            h_sync_start: width + 48,
            h_sync_end: width + 80,
            h_total: width + 160,
            v_sync_start: height + 3,
            v_sync_end: height + 3 + v_sync as u32,
            v_total: v_total as u32,
            hsync_positive: true,
            vsync_positive: false,
        };
        Ok(mode)
    }

    /// The mode's size.
    pub const fn resolution(&self) -> Resolution {
        Resolution {
            width: self.width,
            height: self.height,
        }
    }

    /// Refresh rate in mHz (59_950 for 1920x1200 CVT-RB), 0 for a degenerate mode.
    pub fn refresh_millihz(&self) -> u32 {
        let pixels = u64::from(self.h_total) * u64::from(self.v_total);
        if pixels == 0 {
            return 0;
        }
        u32::try_from(u64::from(self.clock_khz) * 1_000_000 / pixels).unwrap_or(u32::MAX)
    }

    /// One frame in ns (the vblank period), `None` for a degenerate mode.
    pub fn frame_period_ns(&self) -> Option<u64> {
        if self.clock_khz == 0 {
            return None;
        }
        let pixels = u64::from(self.h_total) * u64::from(self.v_total);
        let ns = pixels.checked_mul(1_000_000)? / u64::from(self.clock_khz);
        (ns > 0).then_some(ns)
    }

    /// Horizontal frequency, Hz.
    fn h_freq_hz(&self) -> u64 {
        if self.h_total == 0 {
            return 0;
        }
        u64::from(self.clock_khz) * 1000 / u64::from(self.h_total)
    }
}

/// The 18-byte detailed timing descriptor of `mode` with image size `mm`.
fn encode_dtd(mode: &Mode, mm: (u32, u32)) -> Result<[u8; 18], EdidError> {
    let bad = EdidError::Unrepresentable;
    let h_blank = mode.h_total.checked_sub(mode.width).ok_or(bad)?;
    let v_blank = mode.v_total.checked_sub(mode.height).ok_or(bad)?;
    let h_fp = mode.h_sync_start.checked_sub(mode.width).ok_or(bad)?;
    let h_sync = mode.h_sync_end.checked_sub(mode.h_sync_start).ok_or(bad)?;
    let v_fp = mode.v_sync_start.checked_sub(mode.height).ok_or(bad)?;
    let v_sync = mode.v_sync_end.checked_sub(mode.v_sync_start).ok_or(bad)?;
    let clock = mode.clock_khz / 10;
    if mode.clock_khz % 10 != 0
        || clock == 0
        || clock > 0xFFFF
        || mode.width > 0xFFF
        || mode.height > 0xFFF
        || h_blank > 0xFFF
        || v_blank > 0xFFF
        || h_fp > 0x3FF
        || h_sync > 0x3FF
        || v_fp > 0x3F
        || v_sync > 0x3F
        || mm.0 > 0xFFF
        || mm.1 > 0xFFF
    {
        return Err(bad);
    }
    let lo = |v: u32| (v & 0xFF) as u8;
    let hi4 = |v: u32| ((v >> 8) & 0xF) as u8;
    let flags = 0x18
        | (if mode.vsync_positive { 0x04 } else { 0 })
        | (if mode.hsync_positive { 0x02 } else { 0 });
    Ok([
        lo(clock),
        (clock >> 8) as u8,
        lo(mode.width),
        lo(h_blank),
        (hi4(mode.width) << 4) | hi4(h_blank),
        lo(mode.height),
        lo(v_blank),
        (hi4(mode.height) << 4) | hi4(v_blank),
        lo(h_fp),
        lo(h_sync),
        (((v_fp & 0xF) << 4) | (v_sync & 0xF)) as u8,
        ((((h_fp >> 8) & 3) << 6)
            | (((h_sync >> 8) & 3) << 4)
            | (((v_fp >> 4) & 3) << 2)
            | ((v_sync >> 4) & 3)) as u8,
        lo(mm.0),
        lo(mm.1),
        (hi4(mm.0) << 4) | hi4(mm.1),
        0,
        0,
        flags,
    ])
}

/// The mode of an 18-byte detailed timing descriptor.
fn decode_dtd(d: &[u8]) -> Result<Mode, EdidError> {
    let b = |i: usize| u32::from(d.get(i).copied().unwrap_or(0));
    let clock = b(0) | (b(1) << 8);
    if clock == 0 {
        return Err(EdidError::NoPreferredTiming);
    }
    if b(17) & 0x80 != 0 {
        return Err(EdidError::Interlaced);
    }
    let width = b(2) | ((b(4) >> 4) << 8);
    let h_blank = b(3) | ((b(4) & 0xF) << 8);
    let height = b(5) | ((b(7) >> 4) << 8);
    let v_blank = b(6) | ((b(7) & 0xF) << 8);
    let h_fp = b(8) | (((b(11) >> 6) & 3) << 8);
    let h_sync = b(9) | (((b(11) >> 4) & 3) << 8);
    let v_fp = (b(10) >> 4) | (((b(11) >> 2) & 3) << 4);
    let v_sync = (b(10) & 0xF) | ((b(11) & 3) << 4);
    if width == 0 || height == 0 || h_fp + h_sync > h_blank || v_fp + v_sync > v_blank {
        return Err(EdidError::BadTiming);
    }
    // Digital separate sync (bits 4:3 = 11) carries both polarities; other
    // sync kinds are reported as positive (they do not matter to a virtual pipe).
    let separate = b(17) & 0x18 == 0x18;
    Ok(Mode {
        width,
        height,
        clock_khz: clock * 10,
        h_sync_start: width + h_fp,
        h_sync_end: width + h_fp + h_sync,
        h_total: width + h_blank,
        v_sync_start: height + v_fp,
        v_sync_end: height + v_fp + v_sync,
        v_total: height + v_blank,
        hsync_positive: !separate || b(17) & 0x02 != 0,
        vsync_positive: !separate || b(17) & 0x04 != 0,
    })
}

/// Sum of a block's bytes mod 256 (0 for a valid block).
fn block_sum(block: &[u8]) -> u8 {
    block.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

/// A display descriptor (18 bytes, tag `tag`) holding `text` as EDID
/// strings are stored: up to 13 bytes, `\n`-terminated, space-padded.
fn text_descriptor(tag: u8, text: &[u8]) -> [u8; 18] {
    let mut d = [0u8; 18];
    d[3] = tag;
    let mut i = 5;
    for &c in text.iter().take(12) {
        d[i] = c;
        i += 1;
    }
    d[i] = b'\n';
    for x in d.iter_mut().skip(i + 1) {
        *x = b' ';
    }
    d
}

/// Image size in mm of `px` pixels at 100 DPI.
const fn mm_at_100dpi(px: u32) -> u32 {
    px * 254 / 1000
}

/// A 128-byte EDID 1.4 base block for a monitor whose preferred mode is
/// `mode` (module docs: what it contains); `serial` goes into the ID serial
/// number field (the vGPU id, so two vGPUs' monitors differ).
pub fn generate(mode: &Mode, serial: u32) -> Result<[u8; EDID_BLOCK], EdidError> {
    let mut e = [0u8; EDID_BLOCK];
    e[..8].copy_from_slice(&EDID_HEADER);
    // Manufacturer "GVT": three 5-bit letters, big endian.
    let pnp = |c: u8| u16::from(c - b'A' + 1);
    let id = (pnp(b'G') << 10) | (pnp(b'V') << 5) | pnp(b'T');
    e[8..10].copy_from_slice(&id.to_be_bytes());
    e[10..12].copy_from_slice(&1u16.to_le_bytes()); // product code
    e[12..16].copy_from_slice(&serial.to_le_bytes());
    e[16] = 0; // week: unspecified
    e[17] = (2024 - 1990) as u8; // year of manufacture
    e[18] = 1; // EDID 1.4
    e[19] = 4;
    e[20] = 0xA5; // digital, 8 bits per colour, DisplayPort
    let mm = (mm_at_100dpi(mode.width), mm_at_100dpi(mode.height));
    e[21] = u8::try_from(mm.0.div_ceil(10)).map_err(|_| EdidError::Unrepresentable)?;
    e[22] = u8::try_from(mm.1.div_ceil(10)).map_err(|_| EdidError::Unrepresentable)?;
    e[23] = 120; // gamma 2.2: (2.2 × 100) − 100
    e[24] = 0x06; // sRGB default colour space; preferred timing is native
                  // sRGB chromaticity, 10-bit fractions: R (0.640, 0.330), G (0.300, 0.600),
                  // B (0.150, 0.060), white D65 (0.3127, 0.3290).
    let c: [u16; 8] = [655, 338, 307, 614, 154, 61, 320, 337];
    let low2 = |v: u16| (v & 3) as u8;
    e[25] = (low2(c[0]) << 6) | (low2(c[1]) << 4) | (low2(c[2]) << 2) | low2(c[3]);
    e[26] = (low2(c[4]) << 6) | (low2(c[5]) << 4) | (low2(c[6]) << 2) | low2(c[7]);
    for (i, v) in c.iter().enumerate() {
        e[27 + i] = (v >> 2) as u8;
    }
    // No established timings (35..38 = 0); no standard timings.
    for x in e[38..54].iter_mut() {
        *x = 0x01;
    }
    e[54..72].copy_from_slice(&encode_dtd(mode, mm)?);
    e[72..90].copy_from_slice(&text_descriptor(0xFC, MONITOR_NAME));
    // Range limits: 50–75 Hz (or wider to include the mode), horizontal
    // 30 kHz (or lower) up to the mode's, pixel clock up to the mode's.
    let refresh = mode.refresh_millihz();
    let h_khz = mode.h_freq_hz();
    let min_v = (refresh / 1000).min(50);
    let max_v = refresh.div_ceil(1000).max(75);
    let min_h = (h_khz / 1000).clamp(1, 30);
    let max_h = h_khz.div_ceil(1000).max(30);
    let max_clock = mode.clock_khz.div_ceil(10_000);
    let byte = |v: u64| u8::try_from(v).map_err(|_| EdidError::Unrepresentable);
    let mut r = [0u8; 18];
    r[3] = 0xFD;
    r[5] = byte(u64::from(min_v))?;
    r[6] = byte(u64::from(max_v))?;
    r[7] = byte(min_h)?;
    r[8] = byte(max_h)?;
    r[9] = byte(u64::from(max_clock))?;
    r[10] = 0x01; // range limits only, no extra timing formula
    r[11] = b'\n';
    for x in r[12..].iter_mut() {
        *x = b' ';
    }
    e[90..108].copy_from_slice(&r);
    e[108..126].copy_from_slice(&{
        let mut d = [0u8; 18];
        d[3] = 0x10; // dummy descriptor
        d
    });
    e[126] = 0; // no extensions
    e[127] = 0u8.wrapping_sub(block_sum(&e[..127]));
    Ok(e)
}

/// The default EDID of a vGPU type's resolution (`DEFAULT_REFRESH_HZ`, CVT-RB).
pub fn generate_for(res: Resolution, serial: u32) -> Result<[u8; EDID_BLOCK], EdidError> {
    generate(
        &Mode::cvt_rb(res.width, res.height, DEFAULT_REFRESH_HZ)?,
        serial,
    )
}

/// Validate a whole EDID (module docs, "link up"); returns its block count.
pub fn validate(edid: &[u8]) -> Result<usize, EdidError> {
    let base = edid.get(..EDID_BLOCK).ok_or(EdidError::TooShort)?;
    if base.get(..8) != Some(&EDID_HEADER[..]) {
        return Err(EdidError::BadHeader);
    }
    if base[18] != 1 {
        return Err(EdidError::BadVersion(base[18]));
    }
    let blocks = 1 + usize::from(base[126]);
    let expected = blocks * EDID_BLOCK;
    if edid.len() != expected {
        return Err(EdidError::SizeMismatch {
            expected,
            got: edid.len(),
        });
    }
    for (i, b) in edid.chunks(EDID_BLOCK).enumerate() {
        if b.iter().all(|&x| x == 0) {
            return Err(EdidError::EmptyBlock { block: i });
        }
        if block_sum(b) != 0 {
            return Err(EdidError::BadChecksum { block: i });
        }
    }
    Ok(blocks)
}

/// The preferred mode of a valid EDID: its first detailed timing.
pub fn preferred_mode(edid: &[u8]) -> Result<Mode, EdidError> {
    validate(edid)?;
    decode_dtd(edid.get(54..72).ok_or(EdidError::TooShort)?)
}

/// The monitor name (descriptor 0xFC) of a base block, without padding.
pub fn monitor_name(edid: &[u8]) -> Option<&[u8]> {
    (0..4).find_map(|i| {
        let d = edid.get(54 + 18 * i..72 + 18 * i)?;
        if d[0] != 0 || d[1] != 0 || d[3] != 0xFC {
            return None;
        }
        let text = &d[5..];
        let end = text.iter().position(|&c| c == b'\n').unwrap_or(text.len());
        Some(&text[..end])
    })
}

/// Why a region access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdidRegionError {
    /// Not an aligned 4-byte register access, or outside the registers and
    /// the blob (`-EINVAL`).
    BadAccess,
    /// A write to a read-only register (`-EPERM`).
    ReadOnly,
    /// `edid_size` above `edid_max_size` (`-EINVAL`).
    SizeTooLarge(u32),
    /// `link_state` neither UP nor DOWN (`-EINVAL`).
    BadLinkState(u32),
    /// Link up with an EDID that failed validation (`-EINVAL`).
    InvalidEdid(EdidError),
    /// Link up with a preferred mode above `max_xres`×`max_yres` (`-EINVAL`).
    ModeTooLarge { width: u32, height: u32 },
}

impl EdidRegionError {
    /// The (positive) errno the region's read/write returns negated.
    pub const fn errno(&self) -> i32 {
        match self {
            EdidRegionError::ReadOnly => 1, // EPERM
            _ => 22,                        // EINVAL
        }
    }
}

/// A hotplug event the kernel forwards to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdidEvent {
    Hotplug { connected: bool },
}

/// The guest's view of the monitor: a read-only page of BAR0 (gvt-sim's
/// choice, module docs).  Byte offsets in BAR0.
pub mod guest {
    /// The EDID latched at the last link-up, [`super::EDID_MAX_SIZE`] bytes
    /// (little-endian dwords), zeros while disconnected.
    pub const EDID: u32 = 0x79000;
    /// Bit 0: a monitor is connected.
    pub const STATUS: u32 = 0x79200;
    /// Bytes of EDID at [`EDID`] (0 while disconnected).
    pub const EDID_SIZE: u32 = 0x79204;
    /// Incremented on every hotplug event (plug or unplug): poll it.
    pub const HOTPLUG_COUNT: u32 = 0x79208;
    /// The preferred mode as PIPEASRC encodes sizes: `(w−1)<<16 | (h−1)`
    /// (0 while disconnected).
    pub const PREFERRED_MODE: u32 = 0x7920C;
    /// The preferred mode's refresh rate, mHz.
    pub const REFRESH_MHZ: u32 = 0x79210;
    /// The page (a fixed page of the sparse vreg file).
    pub const BASE: u32 = super::super::regs::GUEST_EDID_PAGE;
    pub const SIZE: u32 = 0x1000;
    /// `STATUS` bit 0.
    pub const STATUS_CONNECTED: u32 = 1;
}

// The guest page lies inside the register range, its fields after the EDID bytes.
const _: () = {
    assert!(guest::BASE + guest::SIZE <= super::regs::REG_RANGE);
    assert!(guest::EDID == guest::BASE && guest::STATUS >= guest::EDID + EDID_MAX_SIZE as u32);
    assert!(guest::REFRESH_MHZ + 4 <= guest::BASE + guest::SIZE);
    assert!(EDID_BLOB_OFFSET as u64 + EDID_MAX_SIZE as u64 <= EDID_REGION_SIZE);
    assert!(regs::SIZE <= EDID_BLOB_OFFSET);
};

/// One vGPU's VFIO EDID region and the monitor it defines.
#[derive(Clone, Debug)]
pub struct EdidRegion {
    max_xres: u32,
    max_yres: u32,
    edid_size: u32,
    link_state: u32,
    /// What the VMM wrote (the region's blob).
    blob: [u8; EDID_MAX_SIZE],
    /// What the guest sees: latched at the last accepted link-up.
    active: [u8; EDID_MAX_SIZE],
    active_len: usize,
    mode: Mode,
    connected: bool,
    hotplugs: u32,
}

impl EdidRegion {
    /// The region of a vGPU whose type has resolution `max` (also
    /// `max_xres`×`max_yres`): connected, with [`generate_for`]`(max, serial)`.
    pub fn new(max: Resolution, serial: u32) -> Result<Self, EdidError> {
        let edid = generate_for(max, serial)?;
        let mode = preferred_mode(&edid)?;
        let mut blob = [0u8; EDID_MAX_SIZE];
        blob[..EDID_BLOCK].copy_from_slice(&edid);
        Ok(EdidRegion {
            max_xres: max.width,
            max_yres: max.height,
            edid_size: EDID_BLOCK as u32,
            link_state: LINK_STATE_UP,
            blob,
            active: blob,
            active_len: EDID_BLOCK,
            mode,
            connected: true,
            hotplugs: 0,
        })
    }

    /// A register's value (`rel`: its offset, see [`regs`]).
    fn reg(&self, rel: u32) -> Option<u32> {
        Some(match rel {
            regs::EDID_OFFSET => EDID_BLOB_OFFSET,
            regs::EDID_MAX_SIZE => EDID_MAX_SIZE as u32,
            regs::EDID_SIZE => self.edid_size,
            regs::MAX_XRES => self.max_xres,
            regs::MAX_YRES => self.max_yres,
            regs::LINK_STATE => self.link_state,
            _ => return None,
        })
    }

    /// Where an access of `len` bytes at region offset `offset` lands.
    fn locate(offset: u64, len: usize) -> Result<Target, EdidRegionError> {
        let end = offset
            .checked_add(len as u64)
            .ok_or(EdidRegionError::BadAccess)?;
        if end <= u64::from(regs::SIZE) {
            if len != 4 || offset % 4 != 0 {
                return Err(EdidRegionError::BadAccess);
            }
            return Ok(Target::Reg(offset as u32));
        }
        let blob = u64::from(EDID_BLOB_OFFSET);
        if offset >= blob && end <= blob + EDID_MAX_SIZE as u64 {
            let start = (offset - blob) as usize;
            return Ok(Target::Blob(start..start + len));
        }
        Err(EdidRegionError::BadAccess)
    }

    /// A VMM read of the region: any bytes inside [`EDID_REGION_SIZE`]
    /// (registers little-endian, reserved bytes zero, the blob).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), EdidRegionError> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or(EdidRegionError::BadAccess)?;
        if end > EDID_REGION_SIZE {
            return Err(EdidRegionError::BadAccess);
        }
        let blob = u64::from(EDID_BLOB_OFFSET);
        for (at, b) in (offset..end).zip(buf.iter_mut()) {
            *b = if at < u64::from(regs::SIZE) {
                let v = self
                    .reg((at & !3) as u32)
                    .ok_or(EdidRegionError::BadAccess)?;
                v.to_le_bytes()[(at & 3) as usize]
            } else if at >= blob {
                *self
                    .blob
                    .get((at - blob) as usize)
                    .ok_or(EdidRegionError::BadAccess)?
            } else {
                0
            };
        }
        Ok(())
    }

    /// A VMM write of the region; `Ok(Some(event))` for a hotplug.
    pub fn write(
        &mut self,
        offset: u64,
        data: &[u8],
    ) -> Result<Option<EdidEvent>, EdidRegionError> {
        match Self::locate(offset, data.len())? {
            Target::Blob(r) => {
                self.blob
                    .get_mut(r)
                    .ok_or(EdidRegionError::BadAccess)?
                    .copy_from_slice(data);
                Ok(None)
            }
            Target::Reg(rel) => {
                let v =
                    u32::from_le_bytes(data.try_into().map_err(|_| EdidRegionError::BadAccess)?);
                match rel {
                    regs::EDID_SIZE => {
                        if v as usize > EDID_MAX_SIZE {
                            return Err(EdidRegionError::SizeTooLarge(v));
                        }
                        self.edid_size = v;
                        Ok(None)
                    }
                    regs::LINK_STATE => self.set_link(v).map(Some),
                    _ => Err(EdidRegionError::ReadOnly),
                }
            }
        }
    }

    fn set_link(&mut self, state: u32) -> Result<EdidEvent, EdidRegionError> {
        match state {
            LINK_STATE_UP => {
                let len = (self.edid_size as usize).min(EDID_MAX_SIZE);
                let edid = self.blob.get(..len).ok_or(EdidRegionError::BadAccess)?;
                let mode = preferred_mode(edid).map_err(EdidRegionError::InvalidEdid)?;
                if (self.max_xres != 0 && mode.width > self.max_xres)
                    || (self.max_yres != 0 && mode.height > self.max_yres)
                {
                    return Err(EdidRegionError::ModeTooLarge {
                        width: mode.width,
                        height: mode.height,
                    });
                }
                self.active = self.blob;
                self.active_len = len;
                self.mode = mode;
                self.connected = true;
            }
            LINK_STATE_DOWN => self.connected = false,
            other => return Err(EdidRegionError::BadLinkState(other)),
        }
        self.link_state = state;
        self.hotplugs = self.hotplugs.wrapping_add(1);
        Ok(EdidEvent::Hotplug {
            connected: self.connected,
        })
    }

    /// Whether a monitor is plugged in.
    pub fn connected(&self) -> bool {
        self.connected
    }
    /// The mode offered to the guest (the latched EDID's preferred mode),
    /// `None` while disconnected.
    pub fn mode(&self) -> Option<Mode> {
        self.connected.then_some(self.mode)
    }
    /// The EDID the guest sees, `None` while disconnected.
    pub fn active_edid(&self) -> Option<&[u8]> {
        if !self.connected {
            return None;
        }
        self.active.get(..self.active_len)
    }
    /// Hotplug events so far.
    pub fn hotplug_count(&self) -> u32 {
        self.hotplugs
    }
    /// `max_xres`×`max_yres`.
    pub fn max_resolution(&self) -> Resolution {
        Resolution {
            width: self.max_xres,
            height: self.max_yres,
        }
    }

    /// Write the guest's view ([`guest`]) into the vGPU's vreg file
    /// (its fixed page, [`super::regs::fixed_vreg_index`]); a short slice
    /// is filled as far as it goes.
    pub fn mirror_into(&self, vregs: &mut [u32]) {
        let mut put = |off: u32, v: u32| {
            if let Some(d) = super::regs::fixed_vreg_index(off).and_then(|i| vregs.get_mut(i)) {
                *d = v;
            }
        };
        let edid = self.active_edid().unwrap_or(&[]);
        for i in 0..EDID_MAX_SIZE / 4 {
            let mut b = [0u8; 4];
            for (k, x) in b.iter_mut().enumerate() {
                *x = edid.get(4 * i + k).copied().unwrap_or(0);
            }
            put(guest::EDID + 4 * i as u32, u32::from_le_bytes(b));
        }
        let mode = self.mode();
        put(
            guest::STATUS,
            if self.connected {
                guest::STATUS_CONNECTED
            } else {
                0
            },
        );
        put(guest::EDID_SIZE, edid.len() as u32);
        put(guest::HOTPLUG_COUNT, self.hotplugs);
        put(
            guest::PREFERRED_MODE,
            mode.map_or(0, |m| {
                (m.width.saturating_sub(1) << 16) | m.height.saturating_sub(1)
            }),
        );
        put(guest::REFRESH_MHZ, mode.map_or(0, |m| m.refresh_millihz()));
    }
}

enum Target {
    Reg(u32),
    Blob(core::ops::Range<usize>),
}

#[cfg(test)]
mod tests {
    use super::super::regs::{PipeSrc, VREG_DWORDS};
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// GVT-g's built-in 1920x1200 EDID (i915 gvt/display.c,
    /// `virtual_dp_monitor_edid[GVT_EDID_1920_1200]`).
    const GVT_G_1920X1200: [u8; 128] = [
        0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x22, 0xf0, 0x54, 0x29, 0x00, 0x00, 0x00,
        0x00, 0x04, 0x17, 0x01, 0x04, 0xa5, 0x34, 0x20, 0x78, 0x23, 0xfc, 0x81, 0xa4, 0x55, 0x4d,
        0x9d, 0x25, 0x12, 0x50, 0x54, 0x21, 0x08, 0x00, 0xd1, 0xc0, 0x81, 0xc0, 0x81, 0x40, 0x81,
        0x80, 0x95, 0x00, 0xa9, 0x40, 0xb3, 0x00, 0x01, 0x01, 0x28, 0x3c, 0x80, 0xa0, 0x70, 0xb0,
        0x23, 0x40, 0x30, 0x20, 0x36, 0x00, 0x06, 0x44, 0x21, 0x00, 0x00, 0x1a, 0x00, 0x00, 0x00,
        0xfd, 0x00, 0x18, 0x3c, 0x18, 0x50, 0x11, 0x00, 0x0a, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
        0x00, 0x00, 0x00, 0xfc, 0x00, 0x48, 0x50, 0x20, 0x5a, 0x52, 0x32, 0x34, 0x34, 0x30, 0x77,
        0x0a, 0x20, 0x20, 0x00, 0x00, 0x00, 0xff, 0x00, 0x43, 0x4e, 0x34, 0x33, 0x30, 0x34, 0x30,
        0x44, 0x58, 0x51, 0x0a, 0x20, 0x20, 0x00, 0x45,
    ];

    /// GVT-g's built-in 1024x768 EDID: established timings only, its first
    /// descriptor is not a detailed timing.
    const GVT_G_1024X768: [u8; 128] = {
        let mut e = GVT_G_1920X1200;
        // standard timings all invalid, first DTD zeroed clock
        let st = [
            0x00, 0xc0, 0x00, 0xc0, 0x00, 0x40, 0x00, 0x80, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00,
            0x00, 0x01,
        ];
        let mut i = 0;
        while i < 16 {
            e[38 + i] = st[i];
            i += 1;
        }
        e[54] = 0;
        e[55] = 0;
        e[127] = 0xef;
        e
    };

    /// The test EDID of drm's KUnit tests (drivers/gpu/drm/tests/drm_kunit_edid.c,
    /// "Test EDID", 1920x1080 148.5 MHz, EDID 1.3), as edid-decode decoded it.
    const DRM_KUNIT_1080P: [u8; 128] = [
        0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x31, 0xd8, 0x2a, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x21, 0x01, 0x03, 0x81, 0xa0, 0x5a, 0x78, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x02, 0x3a, 0x80, 0x18, 0x71, 0x38,
        0x2d, 0x40, 0x58, 0x2c, 0x45, 0x00, 0x40, 0x84, 0x63, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x00,
        0xfc, 0x00, 0x54, 0x65, 0x73, 0x74, 0x20, 0x45, 0x44, 0x49, 0x44, 0x0a, 0x20, 0x20, 0x20,
        0x00, 0x00, 0x00, 0xfd, 0x00, 0x32, 0x46, 0x1e, 0x46, 0x0f, 0x00, 0x0a, 0x20, 0x20, 0x20,
        0x20, 0x20, 0x20, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xab,
    ];

    #[test]
    fn known_edids_parse() {
        assert_eq!(validate(&GVT_G_1920X1200), Ok(1));
        let m = preferred_mode(&GVT_G_1920X1200).unwrap();
        assert_eq!(
            m,
            Mode {
                width: 1920,
                height: 1200,
                clock_khz: 154_000,
                h_sync_start: 1968,
                h_sync_end: 2000,
                h_total: 2080,
                v_sync_start: 1203,
                v_sync_end: 1209,
                v_total: 1235,
                hsync_positive: true,
                vsync_positive: false,
            }
        );
        assert_eq!(monitor_name(&GVT_G_1920X1200), Some(&b"HP ZR2440w"[..]));
        // GVT-g's 1024x768 EDID is well formed but has no detailed timing
        assert_eq!(validate(&GVT_G_1024X768), Ok(1));
        assert_eq!(
            preferred_mode(&GVT_G_1024X768),
            Err(EdidError::NoPreferredTiming)
        );
        // edid-decode: 1920x1080 60.000000 Hz, 148.5 MHz, Hfront 88 Hsync 44
        // Hback 148 P, Vfront 4 Vsync 5 Vback 36 P
        let m = preferred_mode(&DRM_KUNIT_1080P).unwrap();
        assert_eq!((m.width, m.height, m.clock_khz), (1920, 1080, 148_500));
        assert_eq!(
            (
                m.h_sync_start - 1920,
                m.h_sync_end - m.h_sync_start,
                m.h_total - m.h_sync_end
            ),
            (88, 44, 148)
        );
        assert_eq!(
            (
                m.v_sync_start - 1080,
                m.v_sync_end - m.v_sync_start,
                m.v_total - m.v_sync_end
            ),
            (4, 5, 36)
        );
        assert!(m.hsync_positive && m.vsync_positive);
        assert_eq!(m.refresh_millihz(), 60_000);
        assert_eq!(m.frame_period_ns(), Some(16_666_666));
        assert_eq!(monitor_name(&DRM_KUNIT_1080P), Some(&b"Test EDID"[..]));
    }

    #[test]
    fn cvt_rb_matches_the_vesa_timings() {
        // `cvt -r`: 1024x768R 56.00 1024 1072 1104 1184 768 771 775 790 +h -v
        let m = Mode::cvt_rb(1024, 768, 60).unwrap();
        assert_eq!(
            (
                m.clock_khz,
                m.h_sync_start,
                m.h_sync_end,
                m.h_total,
                m.v_sync_start,
                m.v_sync_end,
                m.v_total
            ),
            (56_000, 1072, 1104, 1184, 771, 775, 790)
        );
        assert!(m.hsync_positive && !m.vsync_positive);
        // 1920x1200R 154.00: exactly GVT-g's detailed timing
        assert_eq!(
            Mode::cvt_rb(1920, 1200, 60).unwrap(),
            preferred_mode(&GVT_G_1920X1200).unwrap()
        );
        // 1280x720R 64.00 1280 1328 1360 1440 720 723 728 741 (16:9: 5-line sync)
        let m = Mode::cvt_rb(1280, 720, 60).unwrap();
        assert_eq!((m.clock_khz, m.v_sync_end, m.v_total), (64_000, 728, 741));
        assert_eq!(m.refresh_millihz(), 59_979);
        assert_eq!(
            Mode::cvt_rb(1920, 1200, 60).unwrap().refresh_millihz(),
            59_950
        );
        assert_eq!(Mode::cvt_rb(0, 768, 60), Err(EdidError::Unrepresentable));
        assert_eq!(Mode::cvt_rb(4096, 768, 60), Err(EdidError::Unrepresentable));
        assert_eq!(Mode::cvt_rb(1024, 768, 0), Err(EdidError::Unrepresentable));
        assert_eq!(
            Mode::cvt_rb(1024, 768, 3000),
            Err(EdidError::Unrepresentable)
        );
    }

    #[test]
    fn generated_edids_are_valid_and_round_trip() {
        for (res, clock) in [
            (Resolution::R1024X768, 56_000),
            (Resolution::R1920X1200, 154_000),
        ] {
            let e = generate_for(res, 7).unwrap();
            assert_eq!(e[..8], EDID_HEADER);
            assert_eq!(block_sum(&e), 0, "checksum");
            assert_eq!((e[18], e[19]), (1, 4), "EDID 1.4");
            assert_eq!(validate(&e), Ok(1));
            let m = preferred_mode(&e).unwrap();
            assert_eq!(m, Mode::cvt_rb(res.width, res.height, 60).unwrap());
            assert_eq!((m.resolution(), m.clock_khz), (res, clock));
            assert_eq!(monitor_name(&e), Some(MONITOR_NAME));
            assert_eq!(&e[8..10], &[0x1E, 0xD4], "vendor GVT");
            assert_eq!(u32::from_le_bytes(e[12..16].try_into().unwrap()), 7);
            // range limits cover the mode
            let r = &e[90..108];
            assert_eq!(r[3], 0xFD);
            let hz = m.refresh_millihz() / 1000;
            assert!(u32::from(r[5]) <= hz && hz < u32::from(r[6]));
            let khz = m.h_freq_hz() / 1000;
            assert!(u64::from(r[7]) <= khz && khz < u64::from(r[8]));
            assert!(u32::from(r[9]) * 10_000 >= m.clock_khz);
        }
        // 1024x768 at 100 DPI: 260 x 195 mm, 26 x 20 cm
        let e = generate_for(Resolution::R1024X768, 0).unwrap();
        assert_eq!((e[21], e[22]), (26, 20));
        assert_eq!((e[66], e[67], e[68]), (4, 195, 0x10));
    }

    #[test]
    fn validation_rejects_each_defect() {
        let good = generate_for(Resolution::R1024X768, 1).unwrap();
        let mut e = good;
        e[0] = 1;
        assert_eq!(validate(&e), Err(EdidError::BadHeader));
        let mut e = good;
        e[18] = 2;
        e[127] = e[127].wrapping_sub(1);
        assert_eq!(validate(&e), Err(EdidError::BadVersion(2)));
        let mut e = good;
        e[100] ^= 0x40;
        assert_eq!(validate(&e), Err(EdidError::BadChecksum { block: 0 }));
        assert_eq!(validate(&good[..127]), Err(EdidError::TooShort));
        let mut two = vec![0u8; 256];
        two[..128].copy_from_slice(&good);
        assert_eq!(
            validate(&two),
            Err(EdidError::SizeMismatch {
                expected: 128,
                got: 256
            })
        );
        two[126] = 1;
        two[127] = two[127].wrapping_sub(1);
        assert_eq!(
            validate(&two),
            Err(EdidError::EmptyBlock { block: 1 }),
            "an all-zero extension"
        );
        two[140] = 1;
        assert_eq!(validate(&two), Err(EdidError::BadChecksum { block: 1 }));
        two[140] = 0;
        two[128] = 0x02; // CTA extension tag
        two[255] = 0u8.wrapping_sub(2);
        assert_eq!(validate(&two), Ok(2));
        assert_eq!(preferred_mode(&two).map(|m| m.width), Ok(1024));
        let mut e = good;
        e[54 + 17] |= 0x80;
        e[127] = e[127].wrapping_sub(0x80);
        assert_eq!(preferred_mode(&e), Err(EdidError::Interlaced));
        let mut e = good;
        e[54 + 8] = 0xFF; // front porch 255 + sync 32 > blanking 160
        e[127] = e[127].wrapping_sub(0xFF - 48);
        assert_eq!(preferred_mode(&e), Err(EdidError::BadTiming));
    }

    fn up(r: &mut EdidRegion) -> Result<Option<EdidEvent>, EdidRegionError> {
        r.write(u64::from(regs::LINK_STATE), &LINK_STATE_UP.to_le_bytes())
    }
    fn down(r: &mut EdidRegion) -> Result<Option<EdidEvent>, EdidRegionError> {
        r.write(u64::from(regs::LINK_STATE), &LINK_STATE_DOWN.to_le_bytes())
    }
    fn read_reg(r: &EdidRegion, off: u32) -> u32 {
        let mut b = [0u8; 4];
        r.read(u64::from(off), &mut b).unwrap();
        u32::from_le_bytes(b)
    }
    /// QEMU's sequence (hw/vfio/display.c `vfio_display_edid_update`): link
    /// down, edid_size, blob, link up.
    fn vmm_sets(r: &mut EdidRegion, edid: &[u8]) -> Result<Option<EdidEvent>, EdidRegionError> {
        assert_eq!(down(r), Ok(Some(EdidEvent::Hotplug { connected: false })));
        r.write(
            u64::from(regs::EDID_SIZE),
            &(edid.len() as u32).to_le_bytes(),
        )?;
        r.write(u64::from(read_reg(r, regs::EDID_OFFSET)), edid)?;
        up(r)
    }

    #[test]
    fn the_guest_page_is_free_bar0_space() {
        use super::super::pvinfo::{PVINFO_BASE, PVINFO_SIZE};
        use super::super::regs::lookup;
        assert_eq!(
            guest::BASE,
            PVINFO_BASE + PVINFO_SIZE,
            "the page right after PVINFO"
        );
        for off in (guest::BASE..guest::BASE + guest::SIZE).step_by(4) {
            assert!(lookup(off).is_none(), "{off:#x} is a mediated register");
        }
    }

    #[test]
    fn region_registers_follow_vfio_h() {
        let r = EdidRegion::new(Resolution::R1920X1200, 3).unwrap();
        assert_eq!(read_reg(&r, regs::EDID_OFFSET), EDID_BLOB_OFFSET);
        assert_eq!(read_reg(&r, regs::EDID_MAX_SIZE), EDID_MAX_SIZE as u32);
        assert_eq!(read_reg(&r, regs::EDID_SIZE), 128);
        assert_eq!(
            (read_reg(&r, regs::MAX_XRES), read_reg(&r, regs::MAX_YRES)),
            (1920, 1200)
        );
        assert_eq!(read_reg(&r, regs::LINK_STATE), LINK_STATE_UP);
        assert!(r.connected());
        assert_eq!(
            r.mode().map(|m| m.resolution()),
            Some(Resolution::R1920X1200)
        );
        let mut blob = [0u8; 128];
        r.read(u64::from(EDID_BLOB_OFFSET), &mut blob).unwrap();
        assert_eq!(blob, generate_for(Resolution::R1920X1200, 3).unwrap());
        assert_eq!(r.active_edid(), Some(&blob[..]));

        let mut r = r;
        let w = |r: &mut EdidRegion, off: u32, v: u32| r.write(u64::from(off), &v.to_le_bytes());
        for ro in [
            regs::EDID_OFFSET,
            regs::EDID_MAX_SIZE,
            regs::MAX_XRES,
            regs::MAX_YRES,
        ] {
            assert_eq!(w(&mut r, ro, 0), Err(EdidRegionError::ReadOnly));
            assert_eq!(EdidRegionError::ReadOnly.errno(), 1);
        }
        assert_eq!(
            w(&mut r, regs::EDID_SIZE, 513),
            Err(EdidRegionError::SizeTooLarge(513))
        );
        assert_eq!(read_reg(&r, regs::EDID_SIZE), 128);
        assert_eq!(
            w(&mut r, regs::LINK_STATE, 0),
            Err(EdidRegionError::BadLinkState(0))
        );
        assert_eq!(
            w(&mut r, regs::LINK_STATE, 3),
            Err(EdidRegionError::BadLinkState(3))
        );
        assert_eq!(EdidRegionError::BadLinkState(3).errno(), 22);
        // Access shapes: reads of any shape inside the region, writes to
        // registers aligned 4-byte only, none to the reserved bytes.
        let mut b2 = [0u8; 2];
        r.read(0, &mut b2).unwrap();
        assert_eq!(
            b2,
            EDID_BLOB_OFFSET.to_le_bytes()[..2],
            "2-byte register read"
        );
        let mut b4 = [0u8; 4];
        r.read(2, &mut b4).unwrap();
        assert_eq!(
            b4,
            [0, 0, 0, 2],
            "misaligned read: edid_offset's high half, edid_max_size's low half"
        );
        r.read(24, &mut b4).unwrap();
        assert_eq!(b4, [0; 4], "the reserved bytes read as zero");
        let mut b8 = [0u8; 8];
        r.read(20, &mut b8).unwrap();
        assert_eq!(b8, [1, 0, 0, 0, 0, 0, 0, 0], "link_state, then reserved");
        let end = u64::from(EDID_BLOB_OFFSET) + EDID_MAX_SIZE as u64;
        assert_eq!(end, EDID_REGION_SIZE, "the region ends with the blob");
        assert_eq!(
            r.read(end - 1, &mut [0u8; 2]),
            Err(EdidRegionError::BadAccess),
            "past the blob"
        );
        assert_eq!(
            r.read(u64::MAX - 1, &mut [0u8; 4]),
            Err(EdidRegionError::BadAccess)
        );
        assert!(r.read(end - 1, &mut [0u8; 1]).is_ok());
        let mut whole = [0xEEu8; EDID_REGION_SIZE as usize];
        r.read(0, &mut whole).unwrap();
        assert_eq!(whole[24..EDID_BLOB_OFFSET as usize], [0; 2024]);
        assert_eq!(
            whole[EDID_BLOB_OFFSET as usize..][..128],
            generate_for(Resolution::R1920X1200, 3).unwrap()
        );
        for (off, len) in [(0u64, 2usize), (2, 4), (24, 4), (20, 8), (100, 1)] {
            assert_eq!(
                r.write(off, &vec![0u8; len]),
                Err(EdidRegionError::BadAccess),
                "write of {len} bytes at {off}"
            );
        }
        assert_eq!(
            r.write(end - 1, &[0u8; 2]),
            Err(EdidRegionError::BadAccess),
            "write past the blob"
        );
    }

    #[test]
    fn resolution_change_through_edid_is_a_hotplug_with_the_new_mode() {
        let mut r = EdidRegion::new(Resolution::R1920X1200, 1).unwrap();
        let mut vregs = vec![0u32; VREG_DWORDS];
        r.mirror_into(&mut vregs);
        let rd = |v: &[u32], off: u32| super::super::regs::vreg_get(v, off);
        assert_eq!(rd(&vregs, guest::STATUS), guest::STATUS_CONNECTED);
        assert_eq!(
            PipeSrc(rd(&vregs, guest::PREFERRED_MODE)).width_minus_1(),
            1919
        );
        assert_eq!(rd(&vregs, guest::REFRESH_MHZ), 59_950);

        let small = generate_for(Resolution::R1024X768, 1).unwrap();
        assert_eq!(
            vmm_sets(&mut r, &small),
            Ok(Some(EdidEvent::Hotplug { connected: true }))
        );
        assert_eq!(r.hotplug_count(), 2, "down and up");
        assert_eq!(
            r.mode().map(|m| m.resolution()),
            Some(Resolution::R1024X768)
        );
        r.mirror_into(&mut vregs);
        let mode = PipeSrc(rd(&vregs, guest::PREFERRED_MODE));
        assert_eq!(
            (mode.width_minus_1() + 1, mode.height_minus_1() + 1),
            (1024, 768)
        );
        assert_eq!(rd(&vregs, guest::HOTPLUG_COUNT), 2);
        assert_eq!(rd(&vregs, guest::EDID_SIZE), 128);
        let bytes: Vec<u8> = (0..32)
            .flat_map(|i| rd(&vregs, guest::EDID + 4 * i).to_le_bytes())
            .collect();
        assert_eq!(bytes, small);

        // a foreign, valid EDID (1920x1080 fits under 1920x1200)
        assert!(vmm_sets(&mut r, &DRM_KUNIT_1080P).is_ok());
        assert_eq!(r.mode().map(|m| (m.width, m.height)), Some((1920, 1080)));

        // unplugged: no mode, zeros for the guest
        assert_eq!(
            down(&mut r),
            Ok(Some(EdidEvent::Hotplug { connected: false }))
        );
        assert_eq!(r.mode(), None);
        assert_eq!(r.active_edid(), None);
        r.mirror_into(&mut vregs);
        assert_eq!(rd(&vregs, guest::STATUS), 0);
        assert_eq!(rd(&vregs, guest::EDID), 0);
        assert_eq!(rd(&vregs, guest::PREFERRED_MODE), 0);
        r.mirror_into(&mut vregs[..10]); // a short slice is fine
    }

    #[test]
    fn bad_edids_and_oversized_modes_are_refused_at_link_up() {
        let mut r = EdidRegion::new(Resolution::R1024X768, 1).unwrap();
        let before = r.mode();
        // larger than max_xres x max_yres
        let big = generate_for(Resolution::R1920X1200, 1).unwrap();
        assert_eq!(
            vmm_sets(&mut r, &big),
            Err(EdidRegionError::ModeTooLarge {
                width: 1920,
                height: 1200
            })
        );
        assert_eq!(
            read_reg(&r, regs::LINK_STATE),
            LINK_STATE_DOWN,
            "the refused link-up changed nothing"
        );
        assert!(!r.connected());
        // a corrupted blob
        let mut bad = generate_for(Resolution::R1024X768, 1).unwrap();
        bad[60] ^= 1;
        assert_eq!(
            vmm_sets(&mut r, &bad),
            Err(EdidRegionError::InvalidEdid(EdidError::BadChecksum {
                block: 0
            }))
        );
        // edid_size not matching the extension count
        let good = generate_for(Resolution::R1024X768, 1).unwrap();
        let mut padded = [0u8; 256];
        padded[..128].copy_from_slice(&good);
        assert_eq!(
            vmm_sets(&mut r, &padded),
            Err(EdidRegionError::InvalidEdid(EdidError::SizeMismatch {
                expected: 128,
                got: 256
            }))
        );
        assert_eq!(
            vmm_sets(&mut r, &GVT_G_1024X768),
            Err(EdidRegionError::InvalidEdid(EdidError::NoPreferredTiming))
        );
        // size 0
        r.write(u64::from(regs::EDID_SIZE), &0u32.to_le_bytes())
            .unwrap();
        assert_eq!(
            up(&mut r),
            Err(EdidRegionError::InvalidEdid(EdidError::TooShort))
        );
        // and a good one restores the monitor
        assert_eq!(
            vmm_sets(&mut r, &good),
            Ok(Some(EdidEvent::Hotplug { connected: true }))
        );
        assert_eq!(r.mode(), before);
    }

    #[test]
    fn the_guest_sees_only_latched_edids() {
        let mut r = EdidRegion::new(Resolution::R1920X1200, 1).unwrap();
        let latched = r.active_edid().unwrap().to_vec();
        // the VMM scribbles over the blob while the link is up: nothing changes
        r.write(u64::from(EDID_BLOB_OFFSET) + 60, &[0xAA; 20])
            .unwrap();
        assert_eq!(r.active_edid().unwrap(), &latched[..]);
        let mut b = [0u8; 20];
        r.read(u64::from(EDID_BLOB_OFFSET) + 60, &mut b).unwrap();
        assert_eq!(b, [0xAA; 20], "the region reads back what the VMM wrote");
        assert_eq!(
            up(&mut r),
            Err(EdidRegionError::InvalidEdid(EdidError::BadChecksum {
                block: 0
            }))
        );
        assert_eq!(r.active_edid().unwrap(), &latched[..]);
        assert!(r.connected());
    }

    #[derive(Clone, Debug)]
    enum RegionOp {
        Link(u32),
        Size(u32),
        Edid(usize),
        Raw(u64, Vec<u8>),
        Read(u64, usize),
    }

    fn region_op() -> impl Strategy<Value = RegionOp> {
        prop_oneof![
            prop_oneof![Just(LINK_STATE_UP), Just(LINK_STATE_DOWN), any::<u32>()]
                .prop_map(RegionOp::Link),
            prop_oneof![Just(128u32), Just(256), 0u32..600, any::<u32>()].prop_map(RegionOp::Size),
            (0usize..3).prop_map(RegionOp::Edid),
            (0u64..2700, proptest::collection::vec(any::<u8>(), 0..16))
                .prop_map(|(o, d)| RegionOp::Raw(o, d)),
            (prop_oneof![0u64..2700, any::<u64>()], 0usize..600)
                .prop_map(|(o, l)| RegionOp::Read(o, l)),
        ]
    }

    proptest! {
        /// Arbitrary VMM accesses never panic; the guest only ever sees a
        /// valid EDID whose mode fits the type, or nothing; a link-up is
        /// accepted exactly when the blob is valid and fits.
        #[test]
        fn arbitrary_region_traffic_keeps_the_monitor_valid(ops in proptest::collection::vec(region_op(), 0..60)) {
            let mut r = EdidRegion::new(Resolution::R1024X768, 9).unwrap();
            let edids = [
                generate_for(Resolution::R1024X768, 9).unwrap(),
                generate_for(Resolution { width: 640, height: 480 }, 9).unwrap(),
                generate_for(Resolution::R1920X1200, 9).unwrap(),
            ];
            for op in ops {
                match op {
                    RegionOp::Link(v) => {
                        let size = read_reg(&r, regs::EDID_SIZE) as usize;
                        let mut blob = vec![0u8; size];
                        r.read(u64::from(EDID_BLOB_OFFSET), &mut blob).unwrap();
                        let fits = preferred_mode(&blob).is_ok_and(|m| m.width <= 1024 && m.height <= 768);
                        let res = r.write(u64::from(regs::LINK_STATE), &v.to_le_bytes());
                        match v {
                            LINK_STATE_UP => prop_assert_eq!(res.is_ok(), fits),
                            LINK_STATE_DOWN => prop_assert!(res.is_ok()),
                            _ => prop_assert!(res.is_err()),
                        }
                    }
                    RegionOp::Size(n) => {
                        let res = r.write(u64::from(regs::EDID_SIZE), &n.to_le_bytes());
                        prop_assert_eq!(res.is_ok(), n as usize <= EDID_MAX_SIZE);
                    }
                    RegionOp::Edid(k) => {
                        r.write(u64::from(EDID_BLOB_OFFSET), &edids[k]).unwrap();
                    }
                    RegionOp::Raw(off, data) => {
                        let _ = r.write(off, &data);
                    }
                    RegionOp::Read(off, len) => {
                        let _ = r.read(off, &mut vec![0u8; len]);
                    }
                }
                match (r.active_edid(), r.mode()) {
                    (Some(e), Some(m)) => {
                        prop_assert_eq!(preferred_mode(e), Ok(m));
                        prop_assert!(m.width <= 1024 && m.height <= 768);
                        prop_assert!(r.connected());
                    }
                    (None, None) => prop_assert!(!r.connected()),
                    other => prop_assert!(false, "inconsistent {:?}", other),
                }
            }
        }

        /// Any CVT-RB mode the generator accepts round-trips through an EDID.
        #[test]
        fn generate_parse_round_trip(w in 64u32..4096, h in 64u32..4096, hz in 24u32..121) {
            if let Ok(m) = Mode::cvt_rb(w, h, hz) {
                match generate(&m, w ^ h) {
                    Ok(e) => {
                        prop_assert_eq!(validate(&e), Ok(1));
                        prop_assert_eq!(preferred_mode(&e), Ok(m));
                    }
                    Err(err) => prop_assert_eq!(err, EdidError::Unrepresentable),
                }
            }
        }

        /// The parser never panics on arbitrary bytes.
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = preferred_mode(&bytes);
            let _ = monitor_name(&bytes);
            let mut b = bytes.clone();
            if b.len() >= 128 {
                b[..8].copy_from_slice(&EDID_HEADER);
                b[18] = 1;
                b[126] = ((b.len() / 128) - 1) as u8;
                let n = b.len() / 128 * 128;
                b.truncate(n);
                for blk in b.chunks_mut(128) {
                    let s = block_sum(&blk[..127]);
                    blk[127] = 0u8.wrapping_sub(s);
                }
                prop_assert_eq!(validate(&b), Ok(n / 128));
                let _ = preferred_mode(&b);
            }
        }
    }
}
