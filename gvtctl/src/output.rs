//! Human tables and the `--json` objects (schema documented in README.md).

//!
//! Text from sysfs, `/proc` and `/etc/mdevctl.d` is untrusted: each such value is
//! escaped ([`libgvtctl::escape::escape`]) before it is laid out, every human message
//! passes [`libgvtctl::escape::terminal_safe`] on its way out, and JSON is written with
//! every character outside printable ASCII as a `\u` escape ([`to_json`]).

use libgvtctl::defs::DamagedDefinition;
use libgvtctl::error::ErrorDetails;
use libgvtctl::escape::{escape, terminal_safe};
use libgvtctl::stats::Report;
use libgvtctl::{
    format_size, Definition, Error, Instance, MdevType, PossibleHolder, StartOutcome, Uuid, Vmm,
    VmmArgs,
};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::ser::CompactFormatter;
use std::io::Write as _;

/// Where `--syslog` sends a copy of every line gvtctl prints: the syslog socket
/// (`/dev/log`, or `$GVTCTL_SYSLOG`), else the kernel log (`/dev/kmsg`, which journald
/// and `dmesg` show). udev runs the autostart rule's command with its output going
/// nowhere; this is how what it did (or why it failed) reaches the system log.
struct Syslog {
    socket: Option<std::os::unix::net::UnixDatagram>,
    kmsg: Option<std::fs::File>,
}

static SYSLOG: std::sync::OnceLock<Syslog> = std::sync::OnceLock::new();

/// Turn the copies to the system log on (`--syslog`).
pub fn enable_syslog() {
    let explicit = std::env::var_os("GVTCTL_SYSLOG");
    let path = explicit.clone().unwrap_or_else(|| "/dev/log".into());
    let socket = std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.connect(&path).map(|()| s))
        .ok();
    let kmsg = if socket.is_none() && explicit.is_none() {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/kmsg")
            .ok()
    } else {
        None
    };
    let _ = SYSLOG.set(Syslog { socket, kmsg });
}

/// Severity of a line (syslog's: 3 error, 4 warning, 6 info).
fn severity(line: &str) -> u8 {
    if line.starts_with("gvtctl: error:") {
        3
    } else if line.starts_with("gvtctl: warn:") {
        4
    } else {
        6
    }
}

/// Copy `text` to the system log, a record per line (facility user), if enabled.
pub fn to_syslog(text: &str) {
    let Some(log) = SYSLOG.get() else {
        return;
    };
    let pid = std::process::id();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let line = terminal_safe(line);
        let tag = line.strip_prefix("gvtctl: ").unwrap_or(&line);
        let msg = format!("<{}>gvtctl[{pid}]: {tag}", 8 + severity(&line));
        if let Some(s) = &log.socket {
            let _ = s.send(msg.as_bytes());
        } else if let Some(mut k) = log.kmsg.as_ref() {
            let _ = k.write_all(msg.as_bytes());
        }
    }
}

/// One line on stdout. A closed stdout (`gvtctl create ... | head -n1`) is not an error
/// worth a panic: the command has done its work, the reader wanted less of the output.
pub fn print_out(text: &str) {
    to_syslog(text);
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{}", terminal_safe(text)).and_then(|()| o.flush());
}

/// One line on stderr, made safe for a terminal.
pub fn print_err(text: &str) {
    to_syslog(text);
    let _ = writeln!(std::io::stderr(), "{}", terminal_safe(text));
}

/// An untrusted value as one printable line.
fn e(s: &str) -> String {
    escape(s).into_owned()
}

/// serde_json's pretty output with every character that is not printable ASCII (DEL,
/// C1 controls, bidi overrides, all of non-ASCII) written as `\uXXXX`: the same JSON
/// values, and a byte stream no terminal acts on. (serde_json escapes only C0.)
struct AsciiJson<F>(F);

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for AsciiJson<F> {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        for c in fragment.chars() {
            if (' '..='~').contains(&c) {
                w.write_all(&[c as u8])?;
            } else {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// Pretty JSON in printable ASCII (see [`AsciiJson`]).
pub fn to_json<T: Serialize>(v: &T) -> String {
    let mut buf = Vec::new();
    let f = AsciiJson(serde_json::ser::PrettyFormatter::new());
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, f);
    if v.serialize(&mut ser).is_err() {
        return String::new();
    }
    // The formatter writes ASCII only.
    String::from_utf8(buf).unwrap_or_default()
}

/// One line of JSON in printable ASCII (`gvtctl top -l --json`: one report a line).
pub fn to_json_line<T: Serialize>(v: &T) -> String {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, AsciiJson(CompactFormatter));
    if v.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

// ---- the --json shapes (each has a schema in gvtctl/schema/, see `schemas`) ----------

/// `gvtctl types`.
#[derive(Serialize, JsonSchema)]
pub struct TypesOut<'a> {
    pub types: &'a [MdevType],
}

/// `gvtctl destroy` / `gvtctl stop`.
#[derive(Serialize, JsonSchema)]
pub struct RemovedOut<'a> {
    pub uuid: &'a Uuid,
    pub parent: &'a str,
    #[serde(rename = "type")]
    pub type_id: &'a str,
    /// `destroyed` or `stopped`.
    pub action: &'a str,
    /// Whether the definition was deleted too (`destroy --undefine`).
    pub undefined: bool,
    pub possible_holders: &'a [PossibleHolder],
}

/// `gvtctl list`.
#[derive(Serialize, JsonSchema)]
pub struct ListOut<'a> {
    pub instances: &'a [Instance],
    /// Definition files skipped because they could not be read (empty, not JSON).
    pub damaged_definitions: &'a [DamagedDefinition],
}

/// `gvtctl define`, `autostart`, `modify`.
#[derive(Serialize, JsonSchema)]
pub struct DefinedOut<'a> {
    pub definition: &'a Definition,
}

/// `gvtctl undefine`.
#[derive(Serialize, JsonSchema)]
pub struct UndefinedOut<'a> {
    pub undefined: &'a [Definition],
}

/// What happened to one definition in `gvtctl start --auto`.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StartResultStatus {
    Started,
    AlreadyActive,
    Failed,
}

/// One definition in `gvtctl start --auto`.
#[derive(Serialize, JsonSchema)]
pub struct StartResult<'a> {
    pub uuid: &'a Uuid,
    pub parent: &'a str,
    #[serde(rename = "type")]
    pub type_id: &'a str,
    pub status: StartResultStatus,
    pub error: Option<ErrorBody>,
}

/// `gvtctl start --auto`.
#[derive(Serialize, JsonSchema)]
pub struct StartAutoOut<'a> {
    pub results: Vec<StartResult<'a>>,
}

/// `gvtctl vmm-args` (with `--vmm`, only that VMM's key).
#[derive(Serialize, JsonSchema)]
pub struct VmmArgsOut<'a> {
    pub uuid: &'a Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_hypervisor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub libvirt: Option<String>,
}

/// `gvtctl udev-match-group`.
#[derive(Serialize, JsonSchema)]
pub struct GroupMatchOut<'a> {
    pub group: &'a str,
    pub gvt_rs: Vec<String>,
}

/// `gvtctl sim init|hold|load`.
#[derive(Serialize, JsonSchema)]
pub struct SimOut {
    pub root: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixtures: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// `gvtctl generate DIR`.
#[derive(Serialize, JsonSchema)]
pub struct GeneratedOut {
    pub dir: String,
    /// The files written, relative to `dir`.
    pub files: Vec<String>,
}

/// An error: `{"error": {...}}` on stdout with `--json`.
#[derive(Serialize, JsonSchema)]
pub struct ErrorOut {
    pub error: ErrorBody,
}

#[derive(Serialize, JsonSchema)]
pub struct ErrorBody {
    /// Stable name (`no-type-fits`, `busy`, ...; see README.md).
    pub kind: String,
    pub message: String,
    pub exit_code: i32,
    /// The facts behind it (free types, holders, ...), when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<ErrorDetails>,
}

impl ErrorBody {
    pub fn of(e: &Error) -> ErrorBody {
        ErrorBody {
            kind: e.kind().to_string(),
            message: e.to_string(),
            exit_code: e.exit_code(),
            details: e.details(),
        }
    }
}

/// Every `--json` output's schema, by name (`gvtctl/schema/<name>.schema.json`).
pub fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    use schemars::schema_for;
    vec![
        ("types", schema_for!(TypesOut<'static>)),
        ("instance", schema_for!(Instance)),
        ("removed", schema_for!(RemovedOut<'static>)),
        ("list", schema_for!(ListOut<'static>)),
        ("definition", schema_for!(DefinedOut<'static>)),
        ("undefined", schema_for!(UndefinedOut<'static>)),
        ("start-auto", schema_for!(StartAutoOut<'static>)),
        ("vmm-args", schema_for!(VmmArgsOut<'static>)),
        ("udev-match-group", schema_for!(GroupMatchOut<'static>)),
        ("sim", schema_for!(SimOut)),
        ("generate", schema_for!(GeneratedOut)),
        ("stats", schema_for!(Report)),
        ("error", schema_for!(ErrorOut)),
    ]
}

pub struct Out {
    pub json: bool,
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(&c);
            } else {
                let pad = w
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(c.chars().count());
                s.push_str(&c);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push('\n');
        out.push_str(&line(r.clone()));
    }
    out
}

fn dash(o: Option<String>) -> String {
    o.unwrap_or_else(|| "-".to_string())
}

fn in_use_text(i: &Instance) -> String {
    // Process names are escaped by the library already; escape again only what it
    // would not have (a library user's own Holder), without doubling backslashes.
    let procs = |v: Vec<(&str, u32)>| {
        v.iter()
            .map(|(c, p)| format!("{}({p})", terminal_safe(c)))
            .collect::<Vec<_>>()
            .join(",")
    };
    match i.in_use {
        Some(true) => procs(
            i.holders
                .iter()
                .map(|h| (h.command.as_str(), h.pid))
                .collect(),
        ),
        Some(false) => "no".into(),
        None if !i.possible_holders.is_empty() => format!(
            "?{}",
            procs(
                i.possible_holders
                    .iter()
                    .map(|h| (h.command.as_str(), h.pid))
                    .collect()
            )
        ),
        None => "?".into(),
    }
}

impl Out {
    fn emit<T: Serialize>(&self, v: &T, human: &str) {
        if self.json {
            print_out(&to_json(v));
        } else if !human.is_empty() {
            print_out(human);
        }
    }

    pub fn value<T: Serialize>(&self, v: &T, human: &str) {
        self.emit(v, human)
    }

    pub fn error(&self, e: &Error) {
        if self.json {
            print_out(&to_json(&ErrorOut {
                error: ErrorBody::of(e),
            }));
        }
        print_err(&format!("gvtctl: error: {e}"));
    }

    pub fn types(&self, types: &[MdevType]) {
        let rows: Vec<Vec<String>> = types
            .iter()
            .map(|t| {
                let p = t.partition.as_ref();
                vec![
                    e(&t.parent),
                    e(&t.id),
                    dash(t.available_instances.map(|n| n.to_string())),
                    dash(p.map(|p| format_size(p.aperture))),
                    dash(p.map(|p| format_size(p.high_gm))),
                    dash(p.map(|p| p.fences.to_string())),
                    dash(p.and_then(|p| p.resolution.as_deref().map(e))),
                    dash(p.and_then(|p| p.weight).map(|w| w.to_string())),
                    if p.is_some() {
                        dash(t.name.as_deref().map(e))
                    } else {
                        let d = t
                            .description
                            .as_deref()
                            .and_then(|d| d.lines().next())
                            .map(e);
                        match (t.name.as_deref().map(e), d) {
                            (Some(n), Some(d)) if !d.is_empty() => format!("{n}: {d}"),
                            (n, d) => dash(n.or(d)),
                        }
                    },
                ]
            })
            .collect();
        let human = table(
            &[
                "PARENT",
                "TYPE",
                "AVAIL",
                "APERTURE",
                "HIGH-GM",
                "FENCES",
                "RESOLUTION",
                "WEIGHT",
                "NAME",
            ],
            &rows,
        );
        self.emit(&TypesOut { types }, &human);
    }

    pub fn created(&self, i: &Instance) {
        let mut h = format!(
            "{}\n\ncreated {} on {}",
            i.uuid,
            e(&i.type_id),
            e(&i.parent)
        );
        if let Some(p) = &i.partition {
            h.push_str(&format!(": {}", e(&p.to_string())));
        }
        if let Some(n) = &i.vfio_group_node {
            h.push_str(&format!("\nVFIO group node: {n}"));
        }
        if let Some(d) = &i.definition {
            h.push_str(&format!(
                "\ndefined in {} (start {})",
                e(&d.path),
                d.start.as_str()
            ));
        }
        h.push_str(&format!(
            "\n\nQEMU:\n  {}\ncloud-hypervisor:\n  {}\nlibvirt (<devices> of the domain XML; `gvtctl vmm-args {} --vmm libvirt`)",
            i.vmm_args.qemu, i.vmm_args.cloud_hypervisor, i.uuid
        ));
        self.emit(i, &h);
    }

    pub fn removed(&self, i: &Instance, action: &str, undefined: bool) {
        let mut h = format!(
            "{action} {} ({} on {})",
            i.uuid,
            e(&i.type_id),
            e(&i.parent)
        );
        if undefined {
            h.push_str("; definition deleted");
        } else if let Some(d) = &i.definition {
            h.push_str(&format!(
                "; still defined in {} (`gvtctl start {}`)",
                e(&d.path),
                i.uuid
            ));
        }
        let v = RemovedOut {
            uuid: &i.uuid,
            parent: &i.parent,
            type_id: &i.type_id,
            action,
            undefined,
            possible_holders: &i.possible_holders,
        };
        self.emit(&v, &h);
    }

    pub fn list(&self, list: &[Instance], damaged: &[DamagedDefinition]) {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|i| {
                vec![
                    i.uuid.to_string(),
                    e(&i.parent),
                    e(&i.type_id),
                    if i.active { "active" } else { "stopped" }.to_string(),
                    dash(i.partition.as_ref().map(|p| format_size(p.aperture))),
                    dash(i.partition.as_ref().map(|p| p.fences.to_string())),
                    dash(i.vfio_group_node.as_deref().map(e)),
                    if i.active { in_use_text(i) } else { "-".into() },
                    dash(i.definition.as_ref().map(|d| d.start.as_str().to_string())),
                ]
            })
            .collect();
        let human = if rows.is_empty() {
            "no vGPUs (create one with `gvtctl create --aperture 64M`)".to_string()
        } else {
            table(
                &[
                    "UUID", "PARENT", "TYPE", "STATE", "APERTURE", "FENCES", "VFIO", "IN-USE",
                    "DEFINED",
                ],
                &rows,
            )
        };
        let v = ListOut {
            instances: list,
            damaged_definitions: damaged,
        };
        self.emit(&v, &human);
    }

    pub fn info(&self, i: &Instance) {
        let mut h = String::new();
        let mut kv = |k: &str, v: String| h.push_str(&format!("{k:<19} {v}\n"));
        kv("uuid:", i.uuid.to_string());
        kv("parent:", e(&i.parent));
        kv(
            "type:",
            format!(
                "{}{}",
                e(&i.type_id),
                i.type_name
                    .as_ref()
                    .map(|n| format!(" ({})", e(n)))
                    .unwrap_or_default()
            ),
        );
        kv(
            "state:",
            if i.active {
                "active".into()
            } else {
                "stopped".into()
            },
        );
        if let Some(p) = &i.partition {
            kv("partition:", e(&p.to_string()));
            if let Some(r) = &p.resolution {
                kv("resolution:", e(r));
            }
        }
        if let Some(m) = &i.migration {
            // Issue 14: what a VMM's VFIO migration can use, and where it stands.
            kv(
                "migration:",
                format!(
                    "{} (state {}); a target: gvtctl create --like {} (type {})",
                    e(&m.capabilities.join(" ")),
                    e(&m.state),
                    i.uuid,
                    e(&m.target_type)
                ),
            );
        }
        if let Some(g) = &i.gvt {
            for (k, v) in g {
                let shown = match (k.as_str(), v.as_u64()) {
                    (k2, Some(n)) if k2.ends_with("_base") || k2.ends_with("_size") => {
                        format!("{n} ({})", hex_or_size(k2, n))
                    }
                    // Multi-line attributes (gvt/stats) keep their lines aligned.
                    _ => v
                        .as_str()
                        .map(|s| {
                            s.lines()
                                .map(e)
                                .collect::<Vec<_>>()
                                .join(&format!("\n{:20}", ""))
                        })
                        .unwrap_or_else(|| v.to_string()),
                };
                kv(&format!("gvt/{}:", e(k)), shown);
            }
        }
        if let Some(n) = &i.vfio_group_node {
            kv("vfio:", e(n));
        }
        if i.active {
            kv("in use:", in_use_text(i));
            for p in &i.possible_holders {
                kv("", terminal_safe(&p.to_string()).into_owned());
            }
        }
        match &i.definition {
            Some(d) => kv(
                "defined:",
                format!("{} (start {})", e(&d.path), d.start.as_str()),
            ),
            None => kv("defined:", "no".into()),
        }
        h.push_str(&format!(
            "\nQEMU:\n  {}\ncloud-hypervisor:\n  {}\nlibvirt:\n{}",
            i.vmm_args.qemu,
            i.vmm_args.cloud_hypervisor,
            indent(&i.vmm_args.libvirt)
        ));
        self.emit(i, &h);
    }

    pub fn defined(&self, d: &Definition) {
        let h = format!(
            "{}\n\ndefined {} on {} in {} (start {})",
            d.uuid,
            e(&d.mdev_type),
            e(&d.parent),
            e(&d.path),
            d.start.as_str()
        );
        self.emit(&DefinedOut { definition: d }, &h);
    }

    pub fn undefined(&self, ds: &[Definition]) {
        let h = ds
            .iter()
            .map(|d| format!("undefined {} (deleted {})", d.uuid, e(&d.path)))
            .collect::<Vec<_>>()
            .join("\n");
        self.emit(&UndefinedOut { undefined: ds }, &h);
    }

    pub fn started(&self, i: &Instance) {
        let h = format!(
            "started {} ({} on {})\nQEMU:\n  {}\ncloud-hypervisor:\n  {}",
            i.uuid,
            e(&i.type_id),
            e(&i.parent),
            i.vmm_args.qemu,
            i.vmm_args.cloud_hypervisor
        );
        self.emit(i, &h);
    }

    pub fn start_auto(&self, results: &[StartOutcome]) {
        let mut lines = Vec::new();
        let mut js = Vec::new();
        for r in results {
            let d = &r.definition;
            let (ty, parent) = (e(&d.mdev_type), e(&d.parent));
            let (status, err) = match &r.result {
                Ok(libgvtctl::StartStatus::Started) => (StartResultStatus::Started, None),
                Ok(libgvtctl::StartStatus::AlreadyActive) => {
                    (StartResultStatus::AlreadyActive, None)
                }
                Err(err) => (StartResultStatus::Failed, Some(ErrorBody::of(err))),
            };
            lines.push(match &r.result {
                Ok(libgvtctl::StartStatus::Started) => {
                    format!("started {} ({ty} on {parent})", d.uuid)
                }
                Ok(libgvtctl::StartStatus::AlreadyActive) => {
                    format!("already active {} ({ty} on {parent})", d.uuid)
                }
                Err(err) => format!("failed {} ({ty} on {parent}): {err}", d.uuid),
            });
            js.push(StartResult {
                uuid: &d.uuid,
                parent: &d.parent,
                type_id: &d.mdev_type,
                status,
                error: err,
            });
        }
        if lines.is_empty() {
            lines.push("no auto-start definitions to start".into());
        }
        self.emit(&StartAutoOut { results: js }, &lines.join("\n"));
    }

    pub fn vmm_args(&self, uuid: &Uuid, vmm: Option<Vmm>) {
        let all = VmmArgs::for_uuid(uuid);
        match vmm {
            Some(v) => {
                let s = libgvtctl::vmm_args(uuid, v);
                let mut out = VmmArgsOut {
                    uuid,
                    qemu: None,
                    cloud_hypervisor: None,
                    libvirt: None,
                };
                *match v {
                    Vmm::Qemu => &mut out.qemu,
                    Vmm::CloudHypervisor => &mut out.cloud_hypervisor,
                    Vmm::Libvirt => &mut out.libvirt,
                } = Some(s.clone());
                self.emit(&out, &s);
            }
            None => {
                let h = format!(
                    "QEMU:\n  {}\ncloud-hypervisor:\n  {}\nlibvirt:\n{}",
                    all.qemu,
                    all.cloud_hypervisor,
                    indent(&all.libvirt)
                );
                let out = VmmArgsOut {
                    uuid,
                    qemu: Some(all.qemu.clone()),
                    cloud_hypervisor: Some(all.cloud_hypervisor.clone()),
                    libvirt: Some(all.libvirt.clone()),
                };
                self.emit(&out, &h);
            }
        }
    }
}

impl Out {
    /// `gvtctl stats`: one block per vGPU.
    pub fn stats(&self, r: &Report) {
        let mut h = Vec::new();
        for v in &r.vgpus {
            h.push(format!(
                "{} {} on {}, state {}, weight {}, {}",
                v.uuid,
                e(&v.type_id),
                e(&v.parent),
                dash(v.state.as_deref().map(e)),
                dash(v.weight.map(|w| w.to_string())),
                holder_text(v)
            ));
            let eng = |n: &str, u: &libgvtctl::stats::EngineUse| {
                format!(
                    "{n} {} ({} ns busy)",
                    pct(u.util_pct),
                    dash(u.busy_ns.map(|b| b.to_string()))
                )
            };
            h.push(format!(
                "  engines:     {}, {}",
                eng("render", &v.rcs),
                eng("blitter", &v.bcs)
            ));
            h.push(format!(
                "  submitted:   {} ({} in all); commands audited {} ({} in all)",
                per_s(&v.submissions),
                v.submissions.total,
                per_s(&v.cmds_audited),
                v.cmds_audited.total
            ));
            let classes = |m: &std::collections::BTreeMap<String, libgvtctl::stats::Rate>| {
                m.iter()
                    .map(|(k, r)| format!("{} {} ({})", e(k), per_s(r), r.total))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            h.push(format!(
                "  rejected:    {} ({} in all): {}",
                per_s(&v.rejected),
                v.rejected.total,
                classes(&v.rejects)
            ));
            h.push(format!("  traps:       {}", classes(&v.traps)));
            h.push(format!(
                "  hangs:       {} now, {} in all",
                v.hangs, v.hangs_total
            ));
        }
        if h.is_empty() {
            h.push("no gvt-rs vGPUs running".into());
        }
        h.push(format!("(over {:.3} s)", r.interval_s));
        self.emit(r, &h.join("\n"));
    }

    /// `gvtctl top`: one line per vGPU; `line` prints the JSON on one line (`-l`).
    pub fn top(&self, r: &Report, line: bool) {
        if self.json {
            print_out(&if line { to_json_line(r) } else { to_json(r) });
            return;
        }
        let rows: Vec<Vec<String>> = r
            .vgpus
            .iter()
            .map(|v| {
                vec![
                    v.uuid.to_string(),
                    e(&v.type_id),
                    dash(v.state.as_deref().map(e)),
                    dash(v.weight.map(|w| w.to_string())),
                    pct(v.rcs.util_pct),
                    pct(v.bcs.util_pct),
                    rate(&v.submissions),
                    rate(&v.cmds_audited),
                    rate(&v.rejected),
                    rate(&sum_rates(&v.traps)),
                    v.hangs_total.to_string(),
                    holder_text(v),
                ]
            })
            .collect();
        let human = if rows.is_empty() {
            "no gvt-rs vGPUs running".to_string()
        } else {
            table(
                &[
                    "UUID", "TYPE", "STATE", "W", "RCS%", "BCS%", "SUBM/s", "AUDIT/s", "REJ/s",
                    "TRAPS/s", "HANGS", "HELD BY",
                ],
                &rows,
            )
        };
        print_out(&format!("{human}\n(over {:.3} s)", r.interval_s));
    }
}

fn pct(p: Option<f64>) -> String {
    dash(p.map(|p| format!("{p:.1}%")))
}

fn rate(r: &libgvtctl::stats::Rate) -> String {
    dash(r.per_s.map(|x| format!("{x:.0}")))
}

fn per_s(r: &libgvtctl::stats::Rate) -> String {
    dash(r.per_s.map(|x| format!("{x:.1}/s")))
}

fn sum_rates(
    m: &std::collections::BTreeMap<String, libgvtctl::stats::Rate>,
) -> libgvtctl::stats::Rate {
    let per_s = m
        .values()
        .map(|r| r.per_s)
        .try_fold(0.0, |a, b| b.map(|b| a + b));
    libgvtctl::stats::Rate {
        total: m.values().map(|r| r.total).fold(0, u64::saturating_add),
        delta: None,
        per_s,
    }
}

fn holder_text(v: &libgvtctl::stats::VgpuReport) -> String {
    if v.holders.is_empty() {
        return "not held".into();
    }
    v.holders
        .iter()
        .map(|h| match &h.vm_name {
            Some(n) => format!("VM {} ({} pid {})", e(n), e(&h.command), h.pid),
            None => format!("{} (pid {})", e(&h.command), h.pid),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn hex_or_size(key: &str, n: u64) -> String {
    if key.ends_with("_base") {
        format!("{n:#x}")
    } else {
        format_size(n)
    }
}
