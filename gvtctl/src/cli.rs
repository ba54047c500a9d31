//! Command line (clap derive).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
Examples:
  gvtctl types                                  # what the parents offer, instances left
  gvtctl create --aperture 100M                 # smallest type with >= 100M aperture
  gvtctl create --type gvt_rs-GVTsim_64M --weight 8 --define   # and start it again after reboots
  U=$(gvtctl create --aperture 32M | head -n1)  # just the UUID
  qemu-system-x86_64 ... $(gvtctl vmm-args $U --vmm qemu)
  gvtctl list                                   # vGPUs, VFIO nodes, who uses them
  gvtctl info $U
  gvtctl destroy $U                             # refused (exit 5) while a VMM holds it
  gvtctl completions bash > /etc/bash_completion.d/gvtctl

Sizes: 536870912, 0x20000000, 512M, 1G, 64K (binary units).
Definitions are mdevctl's: /etc/mdevctl.d/<parent>/<uuid>, shared with mdevctl.

Exit codes:
  0 ok                  1 I/O or driver failure      2 bad arguments (size, UUID)
  3 not found (parent/module, type, UUID, definition)
  4 no type fits / no instances left                 5 vGPU in use by a VMM
  6 permission denied (root / VFIO group)            7 device did not appear in time
  8 already exists / already defined

--json prints one JSON object per command on stdout (errors: {\"error\": {...}});
the schema is in gvtctl's README.md.";

#[derive(Parser, Debug)]
#[command(name = "gvtctl", version, about = "Manage gvt-rs vGPUs (VFIO mediated devices)", after_help = AFTER_HELP)]
pub struct Cli {
    /// Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "GVTCTL_ROOT",
        default_value = "/"
    )]
    pub root: PathBuf,

    /// Print machine-readable JSON (stable schema, see README.md)
    #[arg(long, global = true)]
    pub json: bool,

    /// Seconds to wait for a created device to appear (or a removed one to go)
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,

    /// Also send every line printed to the system log (/dev/log, else /dev/kmsg); the
    /// udev rules use it, as udev discards what the commands it runs print
    #[arg(long, global = true)]
    pub syslog: bool,

    /// More log output on stderr (-v info, -vv debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List parents and their mdev types: partition, instances left
    Types {
        /// Only this parent (e.g. gvt-sim0, 0000:00:02.0)
        #[arg(long)]
        parent: Option<String>,
    },
    /// Create a vGPU by requested partition or by type; prints its UUID and VMM arguments
    Create(CreateArgs),
    /// Remove an active vGPU (refused while a VMM holds it)
    Destroy {
        uuid: String,
        /// Also delete its persistent definition
        #[arg(long)]
        undefine: bool,
    },
    /// List vGPUs: active and defined, with partition, VFIO node and users
    List {
        #[arg(long)]
        parent: Option<String>,
        /// Only active (running) ones
        #[arg(long, conflicts_with = "defined")]
        active: bool,
        /// Only ones with a persistent definition
        #[arg(long)]
        defined: bool,
    },
    /// Everything about one vGPU
    Info { uuid: String },
    /// Write a persistent definition (mdevctl format) without starting it
    Define(DefineArgs),
    /// Delete a persistent definition (a running vGPU keeps running)
    Undefine {
        uuid: String,
        #[arg(long)]
        parent: Option<String>,
    },
    /// Start a defined vGPU, or (--auto) every auto-start definition
    Start {
        uuid: Option<String>,
        /// Restrict to this parent
        #[arg(long)]
        parent: Option<String>,
        /// Start every definition with start=auto that is not running (what udev runs)
        #[arg(long)]
        auto: bool,
    },
    /// Stop (remove) a running vGPU, keeping its definition
    Stop { uuid: String },
    /// Turn starting at boot / parent registration on or off for a definition
    Autostart {
        uuid: String,
        state: OnOff,
        #[arg(long)]
        parent: Option<String>,
    },
    /// Change a definition's attributes or start mode, or (--live) a running vGPU's attributes
    Modify(ModifyArgs),
    /// Engine utilisation, submissions, audits, rejects and traps of running gvt-rs vGPUs
    /// over an interval (from two readings of gvt/stats)
    Stats {
        /// Only this vGPU
        uuid: Option<String>,
        /// Seconds between the two readings
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        interval: f64,
    },
    /// A live table of every running gvt-rs vGPU: engine shares, rates, holder VM
    Top {
        /// Refresh every SECS seconds until interrupted (or --count reports); without it,
        /// one report over one second
        #[arg(short = 'l', long = "loop", value_name = "SECS")]
        interval: Option<f64>,
        /// Stop after N reports
        #[arg(short = 'n', long, value_name = "N")]
        count: Option<u64>,
    },
    /// Print the VMM argument for a vGPU (all three VMMs unless --vmm)
    VmmArgs {
        uuid: String,
        #[arg(long, value_enum)]
        vmm: Option<VmmArg>,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    Completions { shell: clap_complete::Shell },
    /// Write the man pages, shell completions and --json schemas into DIR (for packaging;
    /// the checked-in copies are in gvtctl/doc and gvtctl/schema)
    #[command(hide = true)]
    Generate { dir: PathBuf },
    /// For udev: succeed (and print the UUIDs) if IOMMU group N holds a gvt-rs vGPU
    #[command(hide = true)]
    UdevMatchGroup { group: String },
    /// Simulated mdev core for tests and demos (see README.md)
    #[command(subcommand, hide = true)]
    Sim(SimCommand),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Minimum aperture (mappable GM), e.g. 128M, 0x8000000
    #[arg(long, value_name = "SIZE")]
    pub aperture: Option<String>,
    /// Minimum high (non-mappable) GM, e.g. 512M
    #[arg(long, value_name = "SIZE")]
    pub high_gm: Option<String>,
    /// Minimum number of fence registers
    #[arg(long, value_name = "N")]
    pub fences: Option<u32>,
    /// Parent device (default: any with room)
    #[arg(long)]
    pub parent: Option<String>,
    /// Exact mdev type (e.g. gvt_rs-GVTsim_64M, i915-GVTg_V5_4, mtty-1)
    #[arg(long, value_name = "TYPE")]
    pub r#type: Option<String>,
    /// Use this UUID instead of a random one
    #[arg(long)]
    pub uuid: Option<String>,
    /// A migration target for vGPU UUID: its type (a VFIO migration stream is accepted only
    /// by a vGPU of the same type), on --parent, else on UUID's parent, else on another
    /// parent offering the type (none: exit 3, no-migration-target); its weight and display
    /// path (--weight, --display override them)
    #[arg(long, value_name = "UUID", conflicts_with_all = ["aperture", "high_gm", "fences", "type"])]
    pub like: Option<String>,
    /// Scheduler weight (gvt-rs types)
    #[arg(long)]
    pub weight: Option<u32>,
    /// How QEMU's display=on gets the screen (gvt-rs types): dmabuf (zero-copy; QEMU needs
    /// a GL display such as -display egl-headless or gtk,gl=on) or region (any display,
    /// VNC included). Default: the driver's (region, unless gvt_rs was loaded with dmabuf=1)
    #[arg(long, value_enum)]
    pub display: Option<DisplayArg>,
    /// Also write a persistent definition that starts it automatically
    #[arg(long, alias = "persist")]
    pub define: bool,
    /// With --define: do not start automatically
    #[arg(long)]
    pub manual: bool,
}

#[derive(Args, Debug)]
pub struct DefineArgs {
    /// UUID (default: random; an active device's UUID defines that device)
    pub uuid: Option<String>,
    #[arg(long)]
    pub parent: Option<String>,
    #[arg(long, value_name = "TYPE")]
    pub r#type: Option<String>,
    #[arg(long, value_name = "SIZE")]
    pub aperture: Option<String>,
    #[arg(long, value_name = "SIZE")]
    pub high_gm: Option<String>,
    #[arg(long, value_name = "N")]
    pub fences: Option<u32>,
    #[arg(long)]
    pub weight: Option<u32>,
    /// dmabuf or region (see `gvtctl create --help`)
    #[arg(long, value_enum)]
    pub display: Option<DisplayArg>,
    /// Start automatically when the parent appears (default: manual, as mdevctl)
    #[arg(long)]
    pub auto: bool,
    /// Take type, start mode and attributes from FILE, a definition in mdevctl's JSON
    /// format (as `mdevctl define --jsonfile`); needs --parent unless UUID is active
    #[arg(long, value_name = "FILE", conflicts_with_all = ["type", "aperture", "high_gm", "fences", "weight", "display", "auto"])]
    pub jsonfile: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ModifyArgs {
    pub uuid: String,
    #[arg(long)]
    pub parent: Option<String>,
    /// Set attribute PATH (relative to the device directory, e.g. gvt/weight) to VALUE;
    /// repeat for several, written in the order given
    #[arg(long = "attr", value_name = "PATH=VALUE")]
    pub attrs: Vec<String>,
    /// Write the attributes to the running vGPU now instead of to its definition
    /// (gvt/weight takes effect from the scheduler's next period)
    #[arg(long, conflicts_with_all = ["auto", "manual"])]
    pub live: bool,
    /// Start automatically when the parent appears
    #[arg(long, conflicts_with = "manual")]
    pub auto: bool,
    /// Start only when asked
    #[arg(long)]
    pub manual: bool,
}

#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// Build a simulated sysfs tree under --root
    Init {
        /// Comma-separated: gvt-rs (virtual parent gvt-sim0), gvt-rs-pci (PCI parent
        /// 0000:00:04.0), i915, mtty
        #[arg(long, default_value = "gvt-rs")]
        fixture: String,
    },
    /// Pretend process PID holds the vGPU's VFIO node
    Hold {
        uuid: String,
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value = "qemu-system-x86_64")]
        command: String,
        /// The VM name its command line gives (`-name guest=NAME,...`)
        #[arg(long)]
        vm_name: Option<String>,
    },
    /// Program the vGPU's simulated load: each statistics reading is one simulated
    /// second later and adds N to each named gvt/stats counter (or sets a text value)
    Load {
        uuid: String,
        #[arg(long = "rate", value_name = "COUNTER=N")]
        rates: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DisplayArg {
    Dmabuf,
    Region,
}

impl From<DisplayArg> for libgvtctl::DisplayPath {
    fn from(d: DisplayArg) -> Self {
        match d {
            DisplayArg::Dmabuf => libgvtctl::DisplayPath::Dmabuf,
            DisplayArg::Region => libgvtctl::DisplayPath::Region,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum VmmArg {
    Qemu,
    CloudHypervisor,
    Libvirt,
}
