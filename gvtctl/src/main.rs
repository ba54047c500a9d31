//! gvtctl: create, list, define and hand out gvt-rs vGPUs (and any VFIO mdev).
//! See README.md for examples, the `--json` schema and exit codes.

mod cli;
mod output;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, SimCommand, VmmArg};
use libgvtctl::fake_sysfs::{self, Fixture};
use libgvtctl::{
    exit, parse_size, CreateRequest, DefineRequest, DisplayPath, Error, Gvtctl, PartitionRequest,
    StartMode, Uuid,
};
use output::Out;
use std::time::Duration;

/// Log to stderr with `env_logger`: `-v`/`-vv` raise the level from warnings to info or
/// debug, and `RUST_LOG` (e.g. `RUST_LOG=libgvtctl=debug`) overrides both. Each line is
/// `gvtctl: <level>: <message>`, made safe for a terminal like every other message.
fn init_logging(verbose: u8) {
    use std::io::Write as _;
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .parse_env("RUST_LOG")
        .format(|buf, r| {
            let line = format!(
                "gvtctl: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
            output::to_syslog(&line);
            writeln!(buf, "{}", libgvtctl::escape::terminal_safe(&line))
        })
        .init();
}

fn main() {
    let cli = Cli::parse();
    if cli.syslog {
        output::enable_syslog();
    }
    init_logging(cli.verbose);
    let out = Out { json: cli.json };
    let code = match run(&cli, &out) {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            e.exit_code()
        }
    };
    std::process::exit(code);
}

fn uuid_arg(s: &str) -> Result<Uuid, Error> {
    Uuid::parse(s)
}

fn partition(
    aperture: &Option<String>,
    high_gm: &Option<String>,
    fences: Option<u32>,
) -> Result<PartitionRequest, Error> {
    Ok(PartitionRequest {
        aperture: aperture.as_deref().map(parse_size).transpose()?,
        high_gm: high_gm.as_deref().map(parse_size).transpose()?,
        fences,
    })
}

/// A sleep from user-given seconds (0 to 3600).
fn interval_arg(flag: &str, secs: f64) -> Result<Duration, Error> {
    if !(secs.is_finite() && (0.0..=3600.0).contains(&secs)) {
        return Err(Error::InvalidArgument(format!(
            "{flag} takes seconds between 0 and 3600"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The man pages (clap_mangen: gvtctl.1 and one page per visible subcommand), the
/// completions (bash, zsh, fish) and the --json schemas, under `dir`.
fn generate(dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    let man = dir.join("man");
    let comp = dir.join("completions");
    let schema = dir.join("schema");
    for d in [&man, &comp, &schema] {
        std::fs::create_dir_all(d)?;
    }
    clap_mangen::generate_to(Cli::command(), &man)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut Cli::command(), "gvtctl", &comp)?;
    }
    for (name, s) in output::schemas() {
        let text = serde_json::to_string_pretty(&s).map_err(std::io::Error::other)?;
        std::fs::write(schema.join(format!("{name}.schema.json")), text + "\n")?;
    }
    let mut files = Vec::new();
    for d in ["man", "completions", "schema"] {
        for e in std::fs::read_dir(dir.join(d))? {
            files.push(format!("{d}/{}", e?.file_name().to_string_lossy()));
        }
    }
    files.sort();
    Ok(files)
}

fn run(cli: &Cli, out: &Out) -> Result<i32, Error> {
    let mut ctl = Gvtctl::new(&cli.root);
    if !(cli.timeout.is_finite() && cli.timeout >= 0.0 && cli.timeout <= 3600.0) {
        return Err(Error::InvalidArgument(
            "--timeout takes seconds between 0 and 3600".into(),
        ));
    }
    ctl.set_timeout(Duration::from_secs_f64(cli.timeout));
    match &cli.command {
        Command::Types { parent } => {
            let types = ctl.types(parent.as_deref())?;
            out.types(&types);
        }
        Command::Create(a) => {
            // --like UUID: the migration target of that vGPU (same type, its weight and display).
            let like = a.like.as_deref().map(uuid_arg).transpose()?.map(|u| ctl.instance(&u)).transpose()?;
            let like_attr = |k: &str| like.as_ref().and_then(|i| i.gvt.as_ref()?.get(k)?.as_u64());
            // Its type, on --parent or on a parent offering that type (the source's first).
            let target = like.as_ref().map(|i| ctl.migration_target(i, a.parent.as_deref())).transpose()?;
            let req = CreateRequest {
                parent: target.as_ref().map(|t| t.parent.clone()).or_else(|| a.parent.clone()),
                type_id: target.as_ref().map(|t| t.id.clone()).or_else(|| a.r#type.clone()),
                partition: partition(&a.aperture, &a.high_gm, a.fences)?,
                uuid: a.uuid.as_deref().map(uuid_arg).transpose()?,
                weight: a.weight.or_else(|| like_attr("weight").and_then(|w| u32::try_from(w).ok())),
                display: a.display.map(Into::into).or_else(|| {
                    like_attr("dmabuf").map(|d| if d == 1 { DisplayPath::Dmabuf } else { DisplayPath::Region })
                }),
                define: a.define.then_some(if a.manual { StartMode::Manual } else { StartMode::Auto }),
            };
            if a.manual && !a.define {
                return Err(Error::InvalidArgument("--manual only applies with --define".into()));
            }
            let inst = ctl.create(&req)?;
            out.created(&inst);
        }
        Command::Destroy { uuid, undefine } => {
            let u = uuid_arg(uuid)?;
            let inst = ctl.destroy(&u)?;
            let undefined = if *undefine && inst.definition.is_some() {
                ctl.undefine(&u, Some(&inst.parent))?;
                true
            } else {
                false
            };
            out.removed(&inst, "destroyed", undefined);
        }
        Command::Stop { uuid } => {
            let inst = ctl.stop(&uuid_arg(uuid)?)?;
            out.removed(&inst, "stopped", false);
        }
        Command::List { parent, active, defined } => {
            let mut all = ctl.instances();
            if all.is_empty() && ctl.parent_names().is_empty() && !*defined {
                // Nothing at all and no parent: say why rather than print an empty table.
                log::warn!("{}", Error::NoParent { dir: ctl.root().join("sys/class/mdev_bus") });
            }
            all.retain(|i| {
                parent.as_ref().is_none_or(|p| &i.parent == p)
                    && (!*active || i.active)
                    && (!*defined || i.definition.is_some())
            });
            out.list(&all, &ctl.damaged_definitions());
        }
        Command::Info { uuid } => {
            let inst = ctl.instance(&uuid_arg(uuid)?)?;
            out.info(&inst);
        }
        Command::Define(a) if a.jsonfile.is_some() => {
            let file = a.jsonfile.as_deref().unwrap_or(std::path::Path::new("-"));
            let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
            let u = a.uuid.as_deref().map(uuid_arg).transpose()?;
            let def = ctl.define_from_json(u, a.parent.as_deref(), &text, file)?;
            out.defined(&def);
        }
        Command::Modify(a) => {
            let u = uuid_arg(&a.uuid)?;
            let attrs = a
                .attrs
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| Error::InvalidArgument(format!("--attr takes PATH=VALUE (e.g. gvt/weight=8), not '{kv}'")))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let start = match (a.auto, a.manual) {
                (true, _) => Some(StartMode::Auto),
                (_, true) => Some(StartMode::Manual),
                _ => None,
            };
            if attrs.is_empty() && start.is_none() {
                return Err(Error::InvalidArgument("nothing to modify: give --attr PATH=VALUE, --auto or --manual".into()));
            }
            if a.live {
                if a.parent.is_some() {
                    return Err(Error::InvalidArgument("--live acts on the running vGPU; --parent is for definitions".into()));
                }
                let inst = ctl.modify_live(&u, &attrs)?;
                out.info(&inst);
            } else {
                let d = ctl.modify(&u, a.parent.as_deref(), &attrs, start)?;
                out.defined(&d);
            }
        }
        Command::Stats { uuid, interval } => {
            let u = uuid.as_deref().map(uuid_arg).transpose()?;
            let secs = interval_arg("--interval", *interval)?;
            let first = ctl.sample(u.as_ref())?;
            std::thread::sleep(secs);
            let second = ctl.sample(u.as_ref())?;
            out.stats(&libgvtctl::stats::Report::between(&first, &second));
        }
        Command::Top { interval, count } => {
            let secs = interval_arg("-l", interval.unwrap_or(1.0))?;
            let count = match (interval, count) {
                (_, Some(0)) => return Err(Error::InvalidArgument("--count must be at least 1".into())),
                (_, Some(n)) => Some(*n),
                (None, None) => Some(1),
                (Some(_), None) => None,
            };
            let mut prev = ctl.sample(None)?;
            let mut n = 0u64;
            while count.is_none_or(|c| n < c) {
                std::thread::sleep(secs);
                let cur = ctl.sample(None)?;
                if n > 0 && !cli.json {
                    output::print_out("");
                }
                out.top(&libgvtctl::stats::Report::between(&prev, &cur), interval.is_some());
                prev = cur;
                n += 1;
            }
        }
        Command::Generate { dir } => {
            let files = generate(dir).map_err(|e| Error::io(dir, e))?;
            let human = format!("wrote {} files (man pages, completions, schemas) to {}", files.len(), dir.display());
            out.value(&output::GeneratedOut { dir: dir.display().to_string(), files }, &human);
        }
        Command::Define(a) => {
            let req = DefineRequest {
                uuid: a.uuid.as_deref().map(uuid_arg).transpose()?,
                parent: a.parent.clone(),
                type_id: a.r#type.clone(),
                partition: partition(&a.aperture, &a.high_gm, a.fences)?,
                weight: a.weight,
                display: a.display.map(Into::into),
                start: if a.auto { StartMode::Auto } else { StartMode::Manual },
            };
            let def = ctl.define(&req)?;
            out.defined(&def);
        }
        Command::Undefine { uuid, parent } => {
            let ds = ctl.undefine(&uuid_arg(uuid)?, parent.as_deref())?;
            out.undefined(&ds);
        }
        Command::Start { uuid, parent, auto } => {
            match (uuid, auto) {
                (Some(u), false) => {
                    let inst = ctl.start(&uuid_arg(u)?, parent.as_deref())?;
                    out.started(&inst);
                }
                (None, true) => {
                    let results = ctl.start_auto(parent.as_deref());
                    out.start_auto(&results);
                    let failed = results.iter().find_map(|r| r.result.as_ref().err());
                    return Ok(failed.map_or(exit::OK, Error::exit_code));
                }
                _ => {
                    return Err(Error::InvalidArgument(
                        "give either a UUID or --auto (start every auto definition, of --parent P if given)".into(),
                    ))
                }
            }
        }
        Command::Autostart { uuid, state, parent } => {
            let mode = match state {
                cli::OnOff::On => StartMode::Auto,
                cli::OnOff::Off => StartMode::Manual,
            };
            let d = ctl.set_autostart(&uuid_arg(uuid)?, parent.as_deref(), mode)?;
            out.defined(&d);
        }
        Command::VmmArgs { uuid, vmm } => {
            let u = uuid_arg(uuid)?;
            // Must be known (active or defined): a typo should not yield a plausible line.
            ctl.instance(&u)?;
            let vmm = vmm.map(|v| match v {
                VmmArg::Qemu => libgvtctl::Vmm::Qemu,
                VmmArg::CloudHypervisor => libgvtctl::Vmm::CloudHypervisor,
                VmmArg::Libvirt => libgvtctl::Vmm::Libvirt,
            });
            out.vmm_args(&u, vmm);
        }
        Command::UdevMatchGroup { group } => {
            let found = ctl.gvt_rs_in_group(group);
            let names: Vec<String> = found.iter().map(|u| u.to_string()).collect();
            out.value(&output::GroupMatchOut { group, gvt_rs: names.clone() }, &names.join(" "));
            return Ok(if found.is_empty() { exit::FAILURE } else { exit::OK });
        }
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "gvtctl", &mut buf);
            output::print_out(String::from_utf8_lossy(&buf).trim_end_matches('\n'));
        }
        Command::Sim(SimCommand::Init { fixture }) => {
            let mut fx = Vec::new();
            for f in fixture.split(',').filter(|f| !f.is_empty()) {
                fx.push(Fixture::parse(f).ok_or_else(|| {
                    Error::InvalidArgument(format!("unknown fixture '{f}': use gvt-rs, gvt-rs-pci, i915, mtty (comma-separated)"))
                })?);
            }
            fake_sysfs::init(&cli.root, &fx).map_err(|e| Error::io(&cli.root, e))?;
            let v = output::SimOut { root: cli.root.display().to_string(), fixtures: Some(fixture.clone()), pid: None, command: None, node: None, uuid: None };
            out.value(&v, &format!("simulated tree ready in {}", cli.root.display()));
        }
        Command::Sim(SimCommand::Hold { uuid, pid, command, vm_name }) => {
            let inst = ctl.instance(&uuid_arg(uuid)?)?;
            let node = inst.vfio_group_node.ok_or_else(|| Error::InvalidArgument(format!("{uuid} has no VFIO group")))?;
            fake_sysfs::hold_as_vm(&cli.root, *pid, command, vm_name.as_deref(), &node).map_err(|e| Error::io(&cli.root, e))?;
            let human = format!("{command} (pid {pid}) holds {node}");
            let v = output::SimOut { root: cli.root.display().to_string(), fixtures: None, pid: Some(*pid), command: Some(command.clone()), node: Some(node), uuid: Some(uuid.clone()) };
            out.value(&v, &human);
        }
        Command::Sim(SimCommand::Load { uuid, rates }) => {
            let u = uuid_arg(uuid)?;
            let rates = rates
                .iter()
                .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Error::InvalidArgument("--rate takes COUNTER=N (e.g. rcs_time_ns=400000000)".into()))?;
            fake_sysfs::set_load(&cli.root, &u, &rates).map_err(|e| Error::io(&cli.root, e))?;
            let v = output::SimOut { root: cli.root.display().to_string(), fixtures: None, pid: None, command: None, node: None, uuid: Some(u.to_string()) };
            out.value(&v, &format!("{u}: simulated load set"));
        }
    }
    Ok(exit::OK)
}
