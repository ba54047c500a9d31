//! mdev types as the kernel describes them under
//! `/sys/class/mdev_bus/<parent>/mdev_supported_types/<type>/`.
//!
//! gvt-rs and i915 GVT-g share one `description` format
//! (`low_gm_size: 64MB\nhigh_gm_size: 384MB\nfence: 4\nresolution: 1024x768\nweight: 4\n`),
//! from which the graphics-memory partition of a type is read. Every other driver (mtty,
//! mbochs, vendor drivers) has free-text descriptions: those types are listed as they are
//! and have no partition; nothing here fails on unexpected text.

use crate::size::format_size;
use serde::Serialize;
use std::fmt;

/// Which family a type belongs to, from the driver prefix of its directory name
/// (`<driver>-<name>`, as the mdev core builds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TypeKind {
    /// `gvt_rs-GVTsim_64M`: gvt-rs.
    GvtRs,
    /// `i915-GVTg_V5_4`: Intel GVT-g.
    I915Gvtg,
    /// Anything else (mtty, mbochs, vendor types).
    Generic,
}

impl TypeKind {
    pub fn of(type_id: &str) -> TypeKind {
        if type_id.starts_with("gvt_rs-") {
            TypeKind::GvtRs
        } else if type_id.starts_with("i915-GVTg") {
            TypeKind::I915Gvtg
        } else {
            TypeKind::Generic
        }
    }
}

/// The graphics-memory partition a GVT type (gvt-rs or GVT-g) gives each instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Partition {
    /// Mappable ("low") graphics memory, CPU-visible through the aperture BAR, bytes.
    pub aperture: u64,
    /// Non-mappable ("high") graphics memory, bytes.
    pub high_gm: u64,
    /// Fence registers.
    pub fences: u32,
    /// Maximum display resolution, `WxH`, when the description gives one.
    pub resolution: Option<String>,
    /// Scheduler weight, when the description gives one.
    pub weight: Option<u32>,
}

impl Partition {
    /// Parse the GVT description format. `None` when the text is not in that format
    /// (the three size lines are required; resolution and weight are optional).
    pub fn from_description(text: &str) -> Option<Partition> {
        let mut low = None;
        let mut high = None;
        let mut fence = None;
        let mut resolution = None;
        let mut weight = None;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "low_gm_size" => low = parse_gvt_size(value),
                "high_gm_size" => high = parse_gvt_size(value),
                "fence" => fence = value.parse::<u32>().ok(),
                "resolution" => resolution = Some(value.to_string()).filter(|v| !v.is_empty()),
                "weight" => weight = value.parse::<u32>().ok(),
                _ => {}
            }
        }
        Some(Partition {
            aperture: low?,
            high_gm: high?,
            fences: fence?,
            resolution,
            weight,
        })
    }

    /// Whether this partition gives at least what `req` asks for.
    pub fn satisfies(&self, req: &PartitionRequest) -> bool {
        req.aperture.is_none_or(|a| self.aperture >= a)
            && req.high_gm.is_none_or(|h| self.high_gm >= h)
            && req.fences.is_none_or(|f| self.fences >= f)
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "aperture {}, high GM {}, {} fences",
            format_size(self.aperture),
            format_size(self.high_gm),
            self.fences
        )
    }
}

/// GVT-g prints sizes as `%dMB` (meaning MiB): the one size parser reads them.
fn parse_gvt_size(v: &str) -> Option<u64> {
    crate::size::parse_size(v).ok()
}

/// What `gvtctl create --aperture/--high-gm/--fences` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct PartitionRequest {
    pub aperture: Option<u64>,
    pub high_gm: Option<u64>,
    pub fences: Option<u32>,
}

impl PartitionRequest {
    pub fn is_empty(&self) -> bool {
        self.aperture.is_none() && self.high_gm.is_none() && self.fences.is_none()
    }
}

impl fmt::Display for PartitionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(a) = self.aperture {
            parts.push(format!("aperture {}", format_size(a)));
        }
        if let Some(h) = self.high_gm {
            parts.push(format!("high GM {}", format_size(h)));
        }
        if let Some(n) = self.fences {
            parts.push(format!("{n} fences"));
        }
        if parts.is_empty() {
            f.write_str("any partition")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// One mdev type of one parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct MdevType {
    /// Parent device name (`gvt-sim0`, `0000:00:02.0`, `mtty`).
    pub parent: String,
    /// Type directory name, the identifier to create with (`gvt_rs-GVTsim_64M`).
    pub id: String,
    pub kind: TypeKind,
    /// Contents of `name`, if the driver provides it.
    pub name: Option<String>,
    /// Contents of `description`, verbatim (trailing newline removed).
    pub description: Option<String>,
    /// Contents of `device_api` (`vfio-pci`).
    pub device_api: Option<String>,
    /// Contents of `available_instances`; `None` if absent or unreadable.
    pub available_instances: Option<u32>,
    /// The GM partition, for GVT-format descriptions.
    pub partition: Option<Partition>,
}

impl MdevType {
    /// How many instances are left (unknown counts as 0 for selection).
    pub fn left(&self) -> u32 {
        self.available_instances.unwrap_or(0)
    }
}

/// One line of a type listing used in error messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct TypeSummary {
    pub parent: String,
    #[serde(rename = "type")]
    pub type_id: String,
    pub partition: Option<Partition>,
    pub available_instances: Option<u32>,
}

impl From<&MdevType> for TypeSummary {
    fn from(t: &MdevType) -> Self {
        TypeSummary {
            parent: t.parent.clone(),
            type_id: t.id.clone(),
            partition: t.partition.clone(),
            available_instances: t.available_instances,
        }
    }
}

impl fmt::Display for TypeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.type_id, self.parent)?;
        if let Some(p) = &self.partition {
            write!(f, ": {p}")?;
        }
        match self.available_instances {
            Some(n) => write!(f, " ({n} left)"),
            None => write!(f, " (instances left unknown)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gvt_descriptions_parse() {
        let p = Partition::from_description(
            "low_gm_size: 64MB\nhigh_gm_size: 384MB\nfence: 4\nresolution: 1024x768\nweight: 4\n",
        )
        .unwrap();
        assert_eq!(p.aperture, 64 << 20);
        assert_eq!(p.high_gm, 384 << 20);
        assert_eq!(p.fences, 4);
        assert_eq!(p.resolution.as_deref(), Some("1024x768"));
        assert_eq!(p.weight, Some(4));
        let p = Partition::from_description(
            "low_gm_size: 512MB\nhigh_gm_size: 2048MB\nfence: 4\nresolution: 1920x1200\nweight: 16\n",
        )
        .unwrap();
        assert_eq!(
            (p.aperture, p.high_gm, p.weight),
            (512 << 20, 2 << 30, Some(16))
        );
        // Older GVT-g (no weight line).
        let p = Partition::from_description(
            "low_gm_size: 128MB\nhigh_gm_size: 512MB\nfence: 4\nresolution: 1920x1200\n",
        )
        .unwrap();
        assert_eq!(p.weight, None);
    }

    #[test]
    fn free_text_is_not_a_partition() {
        for d in [
            "1 serial port",
            "",
            "low_gm_size: lots\nhigh_gm_size: 1MB\nfence: 1",
            "low_gm_size: 99999999999999999999MB\nhigh_gm_size: 1MB\nfence: 1",
            "::::\n:\n",
            "\u{0}\u{ff}",
        ] {
            assert_eq!(Partition::from_description(d), None, "{d:?}");
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(TypeKind::of("gvt_rs-GVTsim_64M"), TypeKind::GvtRs);
        assert_eq!(TypeKind::of("i915-GVTg_V5_4"), TypeKind::I915Gvtg);
        assert_eq!(TypeKind::of("mtty-1"), TypeKind::Generic);
    }

    #[test]
    fn satisfies() {
        let p = Partition {
            aperture: 128 << 20,
            high_gm: 512 << 20,
            fences: 4,
            resolution: None,
            weight: None,
        };
        assert!(p.satisfies(&PartitionRequest::default()));
        assert!(p.satisfies(&PartitionRequest {
            aperture: Some(128 << 20),
            ..Default::default()
        }));
        assert!(!p.satisfies(&PartitionRequest {
            aperture: Some(129 << 20),
            ..Default::default()
        }));
        assert!(!p.satisfies(&PartitionRequest {
            high_gm: Some(1 << 30),
            ..Default::default()
        }));
        assert!(!p.satisfies(&PartitionRequest {
            fences: Some(5),
            ..Default::default()
        }));
    }
}
