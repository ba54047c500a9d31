//! gvtctl: create, list, define and hand out gvt-rs vGPUs (and any VFIO mdev).
//! See README.md for examples, the `--json` schema and exit codes.

mod cli;
mod output;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, SimCommand, VmmArg};
use libgvtctl::fake_sysfs::{self, Fixture};
use libgvtctl::{
    exit, parse_size, CreateRequest, DefineRequest, Error, Gvtctl, PartitionRequest, StartMode,
    Uuid,
};
use output::Out;
use serde_json::json;
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
            let line = format!("gvtctl: {}: {}", r.level().as_str().to_lowercase(), r.args());
            writeln!(buf, "{}", libgvtctl::escape::terminal_safe(&line))
        })
        .init();
}

fn main() {
    let cli = Cli::parse();
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
            let req = CreateRequest {
                parent: a.parent.clone(),
                type_id: a.r#type.clone(),
                partition: partition(&a.aperture, &a.high_gm, a.fences)?,
                uuid: a.uuid.as_deref().map(uuid_arg).transpose()?,
                weight: a.weight,
                display: a.display.map(Into::into),
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
            out.list(&all);
        }
        Command::Info { uuid } => {
            let inst = ctl.instance(&uuid_arg(uuid)?)?;
            out.info(&inst);
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
            out.value(&json!({"group": group, "gvt_rs": names}), &names.join(" "));
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
                    Error::InvalidArgument(format!("unknown fixture '{f}': use gvt-rs, i915, mtty (comma-separated)"))
                })?);
            }
            fake_sysfs::init(&cli.root, &fx).map_err(|e| Error::io(&cli.root, e))?;
            out.value(&json!({"root": cli.root, "fixtures": fixture}), &format!("simulated tree ready in {}", cli.root.display()));
        }
        Command::Sim(SimCommand::Hold { uuid, pid, command }) => {
            let inst = ctl.instance(&uuid_arg(uuid)?)?;
            let node = inst.vfio_group_node.ok_or_else(|| Error::InvalidArgument(format!("{uuid} has no VFIO group")))?;
            fake_sysfs::hold(&cli.root, *pid, command, &node).map_err(|e| Error::io(&cli.root, e))?;
            out.value(&json!({"pid": pid, "command": command, "node": node}), &format!("{command} (pid {pid}) holds {node}"));
        }
    }
    Ok(exit::OK)
}
