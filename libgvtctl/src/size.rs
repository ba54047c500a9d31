//! Sizes as users type them (`512M`, `1.5G`, `2GiB`, `0x20000000`, `536870912`) and as
//! gvtctl prints them (the largest binary unit that divides the value exactly). One parser
//! serves the command line and the GVT type descriptions (`low_gm_size: 512MB`).
//!
//! Units are binary (K = 1024, and `MB` means MiB), like GVT-g's `low_gm_size: 512MB`.
//! The decimal forms are the `parse-size` crate's; hexadecimal byte counts are ours.

use crate::error::Error;

/// The forms [`parse_size()`] accepts; quoted in every error it returns.
pub const ACCEPTED_SIZE_FORMS: &str = "a byte count (536870912), hex bytes (0x20000000), or a \
number, decimals allowed, with a binary unit K, M, G or T (512M, 1.5G, 2GiB, 64K; \
case-insensitive, 'MiB'/'MB' also accepted, both meaning 2^20)";

/// Parse a size in bytes. Never panics; overflow and junk are [`Error::InvalidSize`].
/// A fraction of a byte is rounded to the nearest byte (`0.5K` is 512, `1.5G` exact).
pub fn parse_size(input: &str) -> Result<u64, Error> {
    let bad = |reason: &str| Error::InvalidSize {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("not a hexadecimal number"));
        }
        return u64::from_str_radix(hex, 16).map_err(|_| bad("too large"));
    }
    if !s.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return Err(bad("does not start with a number"));
    }
    parse_size::Config::new()
        .with_binary()
        .parse_size(s)
        .map_err(|e| match e {
            parse_size::Error::PosOverflow => bad("too large"),
            parse_size::Error::Empty => bad("no number"),
            _ => bad("not a number with a known unit"),
        })
}

/// Print a size with the largest unit that divides it exactly: `512M`, `1G`, `4K`, `100`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 3] = [(30, "G"), (20, "M"), (10, "K")];
    if bytes == 0 {
        return "0".to_string();
    }
    for (shift, unit) in UNITS {
        if bytes % (1u64 << shift) == 0 {
            return format!("{}{}", bytes >> shift, unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_size("0x20000000").unwrap(), 512 << 20);
        assert_eq!(parse_size("0X10").unwrap(), 16);
        assert_eq!(parse_size("536870912").unwrap(), 512 << 20);
        assert_eq!(parse_size(" 2M ").unwrap(), 2 << 20);
        assert_eq!(parse_size("0").unwrap(), 0);
        // Decimals, as users type them (issue 16: `1.5G` was "unknown unit").
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("0.5K").unwrap(), 512);
        assert_eq!(parse_size("1.25 MiB").unwrap(), 1280 << 10);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert_eq!(parse_size("512mb").unwrap(), 512 << 20);
    }

    #[test]
    fn rejected_forms_name_accepted_ones() {
        for bad in [
            "",
            "M",
            "12Q",
            "0x",
            "0xZZ",
            "-1",
            "+1",
            "1.5.5G",
            "G1",
            "1Q",
            "1 X",
            "99999999999999999999",
            "0x1ffffffffffffffff",
            "17179869184G",
            "99999999999999999999999E",
            "é",
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidSize { .. }), "{bad}");
            assert!(e.to_string().contains("0x20000000"), "{e}");
            assert!(e.to_string().contains("512M"), "{e}");
        }
    }

    #[test]
    fn format_roundtrips() {
        for v in [
            0u64,
            1,
            1023,
            1024,
            4096,
            512 << 20,
            1 << 30,
            3 << 30,
            (1 << 30) + 4096,
            u64::MAX,
        ] {
            assert_eq!(
                parse_size(&format_size(v)).unwrap(),
                v,
                "{}",
                format_size(v)
            );
        }
        assert_eq!(format_size(512 << 20), "512M");
        assert_eq!(format_size(1 << 30), "1G");
        assert_eq!(format_size(1536 << 20), "1536M");
        assert_eq!(format_size(100), "100");
    }
}
