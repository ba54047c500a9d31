//! EDIDs the tests hand the vGPU as a VMM would (the VFIO EDID region),
//! written independently of the driver's own generator.

/// A VESA DMT mode's detailed timing: pixel clock in 10 kHz units, active
/// and blanking pixels and lines, front porch and sync widths.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub clock: u32,
    pub ha: u32,
    pub hb: u32,
    pub va: u32,
    pub vb: u32,
    pub hfp: u32,
    pub hs: u32,
    pub vfp: u32,
    pub vs: u32,
}

/// DMT 1024x768@60 (65.00 MHz, 1344x806 total).
pub const DMT_1024X768: Timing = Timing {
    clock: 6500,
    ha: 1024,
    hb: 320,
    va: 768,
    vb: 38,
    hfp: 24,
    hs: 136,
    vfp: 3,
    vs: 6,
};

/// DMT 800x600@60 (40.00 MHz, 1056x628 total).
pub const DMT_800X600: Timing = Timing {
    clock: 4000,
    ha: 800,
    hb: 256,
    va: 600,
    vb: 28,
    hfp: 40,
    hs: 128,
    vfp: 1,
    vs: 4,
};

/// A 128-byte EDID 1.4 whose one detailed timing (the preferred mode) is
/// `t`; dummy descriptors in the other three slots.
pub fn edid(t: &Timing) -> [u8; 128] {
    let mut e = [0u8; 128];
    e[..8].copy_from_slice(&[0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0]);
    let l = |c: u8| u16::from(c - b'A' + 1);
    e[8..10].copy_from_slice(&((l(b'T') << 10) | (l(b'S') << 5) | l(b'T')).to_be_bytes());
    e[10] = 0x34;
    e[16] = 1;
    e[17] = 34;
    e[18] = 1;
    e[19] = 4;
    e[20] = 0xA5;
    (e[21], e[22], e[23], e[24]) = (26, 20, 120, 0x06);
    for i in 0..8 {
        e[38 + 2 * i] = 1;
        e[39 + 2 * i] = 1;
    }
    let d = [
        t.clock as u8,
        (t.clock >> 8) as u8,
        t.ha as u8,
        t.hb as u8,
        (((t.ha >> 8) << 4) | (t.hb >> 8)) as u8,
        t.va as u8,
        t.vb as u8,
        (((t.va >> 8) << 4) | (t.vb >> 8)) as u8,
        t.hfp as u8,
        t.hs as u8,
        ((t.vfp << 4) | t.vs) as u8,
        0,
        0x04,
        0x03,
        0,
        0,
        0,
        0x18,
    ];
    e[54..72].copy_from_slice(&d);
    for s in 1..4 {
        e[54 + 18 * s + 3] = 0x10;
    }
    e[127] = 0u8.wrapping_sub(e[..127].iter().fold(0u8, |a, &b| a.wrapping_add(b)));
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_and_preferred_mode() {
        for (t, w, h) in [(DMT_1024X768, 1024u32, 768u32), (DMT_800X600, 800, 600)] {
            let e = edid(&t);
            assert_eq!(e.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
            let px = u32::from(e[56]) | (u32::from(e[58] >> 4) << 8);
            let py = u32::from(e[59]) | (u32::from(e[61] >> 4) << 8);
            assert_eq!((px, py), (w, h));
        }
    }
}
