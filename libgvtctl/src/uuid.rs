//! UUIDs of mediated devices: parsing (the kernel accepts any case, prints lower case)
//! and random (version 4) generation from the kernel's CSPRNG.

use crate::error::Error;
use std::fmt;
use std::io::Read;

/// A mediated device UUID, stored in the kernel's canonical lower-case hyphenated form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Uuid(String);

impl Uuid {
    /// Parse `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex digits, any case).
    pub fn parse(s: &str) -> Result<Uuid, Error> {
        let s = s.trim();
        let ok = s.len() == 36
            && s.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if ok {
            Ok(Uuid(s.to_ascii_lowercase()))
        } else {
            Err(Error::InvalidUuid {
                input: s.chars().take(80).collect(),
            })
        }
    }

    /// A random version-4 UUID (RFC 9562) from `/dev/urandom`.
    pub fn new_v4() -> Result<Uuid, Error> {
        let mut b = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|e| Error::io("/dev/urandom", e))?;
        Ok(Self::from_random_bytes(b))
    }

    /// Stamp version 4 / variant 10 onto 16 random bytes.
    pub fn from_random_bytes(mut b: [u8; 16]) -> Uuid {
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Uuid(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalises_case() {
        let u = Uuid::parse("83B8F4F2-509F-382F-3C1E-E6BFE0FA1001").unwrap();
        assert_eq!(u.as_str(), "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001");
    }

    #[test]
    fn parse_rejects_junk() {
        for bad in [
            "",
            "x",
            "83b8f4f2509f382f3c1ee6bfe0fa1001",
            "83b8f4f2-509f-382f-3c1e-e6bfe0fa100g",
            "83b8f4f2-509f-382f-3c1e-e6bfe0fa10011",
            "83b8f4f2_509f-382f-3c1e-e6bfe0fa1001",
            "83b8f4f2-509f-382f-3c1e-e6bfe0fa10é",
        ] {
            assert!(Uuid::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn v4_has_version_and_variant() {
        let u = Uuid::from_random_bytes([0xff; 16]);
        assert_eq!(u.as_str(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let u = Uuid::from_random_bytes([0; 16]);
        assert_eq!(u.as_str(), "00000000-0000-4000-8000-000000000000");
        let a = Uuid::new_v4().unwrap();
        let b = Uuid::new_v4().unwrap();
        assert_ne!(a, b);
        assert_eq!(Uuid::parse(a.as_str()).unwrap(), a);
        assert_eq!(&a.as_str()[14..15], "4");
        assert!("89ab".contains(&a.as_str()[19..20]));
    }
}
