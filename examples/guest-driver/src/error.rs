//! What can go wrong, with enough context to act on it.

use std::fmt;
use std::io;
use std::time::Duration;

use gvt_core::backend::EngineId;

/// Every failure of the reference driver and its backends.
#[derive(Debug)]
pub enum Error {
    /// A system call failed (`what` names the call and its object).
    Io { what: String, err: io::Error },
    /// A VFIO request failed (vfio-ioctls' error rendered).
    Vfio { what: String, err: String },
    /// No PVINFO magic at BAR0 + 0x78000: not a gvt-rs vGPU.
    NotVgpu,
    /// The device refused an access (`what`: the access; `detail`: why).
    Refused { what: String, detail: String },
    /// A graphics address outside the driver's own slices (ballooning:
    /// the driver never touches another vGPU's graphics memory).
    NotMine { gma: u64, len: u64 },
    /// A graphics address inside the slices but not backed by a mapping.
    NotMapped { gma: u64 },
    /// Guest RAM exhausted.
    NoRam { wanted: u64, free: u64 },
    /// Bad arguments (alignment, sizes, empty rectangles, ...).
    BadInput(String),
    /// Waited too long.
    Timeout { what: String, waited: Duration },
    /// The device reported a command-streamer error for `engine`.
    EngineError {
        engine: EngineId,
        iir: u32,
        eir: u32,
    },
    /// A result differs from what was asked for.
    Mismatch {
        what: String,
        at: u64,
        expected: u32,
        got: u32,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, err: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            err,
        }
    }
    pub(crate) fn last_os(what: impl Into<String>) -> Self {
        Error::io(what, io::Error::last_os_error())
    }
    pub(crate) fn vfio(what: impl Into<String>, err: impl fmt::Display) -> Self {
        Error::Vfio {
            what: what.into(),
            err: err.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { what, err } => write!(f, "{what}: {err}"),
            Error::Vfio { what, err } => write!(f, "VFIO {what}: {err}"),
            Error::NotVgpu => write!(f, "no PVINFO magic at BAR0+0x78000: not a gvt-rs vGPU"),
            Error::Refused { what, detail } => write!(f, "the device refused {what}: {detail}"),
            Error::NotMine { gma, len } => {
                write!(
                    f,
                    "graphics memory {gma:#x}+{len:#x} is outside this vGPU's slices (ballooned)"
                )
            }
            Error::NotMapped { gma } => {
                write!(f, "graphics address {gma:#x} is not mapped by the driver")
            }
            Error::NoRam { wanted, free } => {
                write!(f, "out of guest RAM: {wanted} pages wanted, {free} free")
            }
            Error::BadInput(s) => write!(f, "bad input: {s}"),
            Error::Timeout { what, waited } => write!(
                f,
                "timed out after {:.1} s waiting for {what}",
                waited.as_secs_f64()
            ),
            Error::EngineError { engine, iir, eir } => {
                write!(
                    f,
                    "{engine:?} reported an error: GT IIR {iir:#x}, RING_EIR {eir:#x}"
                )
            }
            Error::Mismatch {
                what,
                at,
                expected,
                got,
            } => {
                write!(
                    f,
                    "{what} at {at:#x}: expected {expected:#x}, found {got:#x}"
                )
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { err, .. } => Some(err),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
