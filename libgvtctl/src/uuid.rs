//! UUIDs of mediated devices, with the `uuid` crate: parsing in the one form the kernel
//! takes (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, any case; printed lower case) and
//! random (version 4) generation.

use crate::error::Error;
use std::fmt;

/// A mediated device UUID; displays in the kernel's canonical lower-case hyphenated form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid(uuid::Uuid);

impl Uuid {
    /// Parse `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex digits, any case). The other
    /// forms the `uuid` crate knows (simple, braced, URN) are refused: the mdev core's
    /// `create` takes only this one, and device directories are named by it.
    pub fn parse(s: &str) -> Result<Uuid, Error> {
        let s = s.trim();
        let bad = || Error::InvalidUuid {
            input: s.chars().take(80).collect(),
        };
        if s.len() != 36 {
            return Err(bad());
        }
        uuid::Uuid::try_parse(s).map(Uuid).map_err(|_| bad())
    }

    /// A random version-4 UUID (RFC 9562) from the operating system's CSPRNG.
    pub fn new_v4() -> Uuid {
        Uuid(uuid::Uuid::new_v4())
    }

    /// Stamp version 4 / variant 10 onto 16 random bytes.
    pub fn from_random_bytes(b: [u8; 16]) -> Uuid {
        Uuid(uuid::Builder::from_random_bytes(b).into_uuid())
    }

    /// The canonical text (what `/sys/bus/mdev/devices/` names the device by).
    pub fn as_string(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl schemars::JsonSchema for Uuid {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Uuid".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
        })
    }
}

impl serde::Serialize for Uuid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalises_case() {
        let u = Uuid::parse("83B8F4F2-509F-382F-3C1E-E6BFE0FA1001").unwrap();
        assert_eq!(u.to_string(), "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001");
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
        assert_eq!(u.to_string(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let u = Uuid::from_random_bytes([0; 16]);
        assert_eq!(u.to_string(), "00000000-0000-4000-8000-000000000000");
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        assert_ne!(a, b);
        assert_eq!(Uuid::parse(&a.to_string()).unwrap(), a);
        let t = a.to_string();
        assert_eq!(&t[14..15], "4");
        assert!("89ab".contains(&t[19..20]));
    }
}
