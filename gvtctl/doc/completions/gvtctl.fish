# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_gvtctl_global_optspecs
    string join \n root= json timeout= syslog v/verbose h/help V/version
end

function __fish_gvtctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_gvtctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_gvtctl_using_subcommand
    set -l cmd (__fish_gvtctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c gvtctl -n "__fish_gvtctl_needs_command" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_needs_command" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_needs_command" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -s V -l version -d 'Print version'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "types" -d 'List parents and their mdev types: partition, instances left'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "create" -d 'Create a vGPU by requested partition or by type; prints its UUID and VMM arguments'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "destroy" -d 'Remove an active vGPU (refused while a VMM holds it)'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "list" -d 'List vGPUs: active and defined, with partition, VFIO node and users'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "info" -d 'Everything about one vGPU'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "define" -d 'Write a persistent definition (mdevctl format) without starting it'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "undefine" -d 'Delete a persistent definition (a running vGPU keeps running)'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "start" -d 'Start a defined vGPU, or (--auto) every auto-start definition'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "stop" -d 'Stop (remove) a running vGPU, keeping its definition'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "autostart" -d 'Turn starting at boot / parent registration on or off for a definition'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "modify" -d 'Change a definition\'s attributes or start mode, or (--live) a running vGPU\'s attributes'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "stats" -d 'Engine utilisation, submissions, audits, rejects and traps of running gvt-rs vGPUs over an interval (from two readings of gvt/stats)'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "top" -d 'A live table of every running gvt-rs vGPU: engine shares, rates, holder VM'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "vmm-args" -d 'Print the VMM argument for a vGPU (all three VMMs unless --vmm)'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "completions" -d 'Print shell completions (bash, zsh, fish, elvish, powershell)'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "generate" -d 'Write the man pages, shell completions and --json schemas into DIR (for packaging; the checked-in copies are in gvtctl/doc and gvtctl/schema)'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "udev-match-group" -d 'For udev: succeed (and print the UUIDs) if IOMMU group N holds a gvt-rs vGPU'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "sim" -d 'Simulated mdev core for tests and demos (see README.md)'
complete -c gvtctl -n "__fish_gvtctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand types" -l parent -d 'Only this parent (e.g. gvt-sim0, 0000:00:02.0)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand types" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand types" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand types" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand types" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand types" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand types" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -l aperture -d 'Minimum aperture (mappable GM), e.g. 128M, 0x8000000' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -l high-gm -d 'Minimum high (non-mappable) GM, e.g. 512M' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -l fences -d 'Minimum number of fence registers' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -l parent -d 'Parent device (default: any with room)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -l type -d 'Exact mdev type (e.g. gvt_rs-GVTsim_64M, i915-GVTg_V5_4, mtty-1)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -l uuid -d 'Use this UUID instead of a random one' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -l like -d 'A migration target for vGPU UUID: its type (a VFIO migration stream is accepted only by a vGPU of the same type), on --parent, else on UUID\'s parent, else on another parent offering the type (none: exit 3, no-migration-target); its weight and display path (--weight, --display override them)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -l weight -d 'Scheduler weight (gvt-rs types)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -l display -d 'How QEMU\'s display=on gets the screen (gvt-rs types): dmabuf (zero-copy; QEMU needs a GL display such as -display egl-headless or gtk,gl=on) or region (any display, VNC included). Default: the driver\'s (region, unless gvt_rs was loaded with dmabuf=1)' -r -f -a "dmabuf\t''
region\t''"
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -l define -d 'Also write a persistent definition that starts it automatically'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -l manual -d 'With --define: do not start automatically'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand create" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand destroy" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand destroy" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand destroy" -l undefine -d 'Also delete its persistent definition'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand destroy" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand destroy" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand destroy" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand destroy" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand list" -l parent -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand list" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand list" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand list" -l active -d 'Only active (running) ones'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand list" -l defined -d 'Only ones with a persistent definition'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand list" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand list" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand list" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand info" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand info" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand info" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand info" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand info" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand info" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand define" -l parent -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand define" -l type -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand define" -l aperture -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand define" -l high-gm -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand define" -l fences -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand define" -l weight -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand define" -l display -d 'dmabuf or region (see `gvtctl create --help`)' -r -f -a "dmabuf\t''
region\t''"
complete -c gvtctl -n "__fish_gvtctl_using_subcommand define" -l jsonfile -d 'Take type, start mode and attributes from FILE, a definition in mdevctl\'s JSON format (as `mdevctl define --jsonfile`); needs --parent unless UUID is active' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand define" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand define" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand define" -l auto -d 'Start automatically when the parent appears (default: manual, as mdevctl)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand define" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand define" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand define" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand define" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand undefine" -l parent -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand undefine" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand undefine" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand undefine" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand undefine" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand undefine" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand undefine" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand start" -l parent -d 'Restrict to this parent' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand start" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand start" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand start" -l auto -d 'Start every definition with start=auto that is not running (what udev runs)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand start" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand start" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand start" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand start" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand stop" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand stop" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand stop" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand stop" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand stop" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand stop" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand autostart" -l parent -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand autostart" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand autostart" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand autostart" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand autostart" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand autostart" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand autostart" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand modify" -l parent -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand modify" -l attr -d 'Set attribute PATH (relative to the device directory, e.g. gvt/weight) to VALUE; repeat for several, written in the order given' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand modify" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand modify" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand modify" -l live -d 'Write the attributes to the running vGPU now instead of to its definition (gvt/weight takes effect from the scheduler\'s next period)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand modify" -l auto -d 'Start automatically when the parent appears'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand modify" -l manual -d 'Start only when asked'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand modify" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand modify" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand modify" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand modify" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand stats" -l interval -d 'Seconds between the two readings' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand stats" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand stats" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand stats" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand stats" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand stats" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand stats" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand top" -s l -l loop -d 'Refresh every SECS seconds until interrupted (or --count reports); without it, one report over one second' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand top" -s n -l count -d 'Stop after N reports' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand top" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand top" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand top" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand top" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand top" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand top" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand vmm-args" -l vmm -r -f -a "qemu\t''
cloud-hypervisor\t''
libvirt\t''"
complete -c gvtctl -n "__fish_gvtctl_using_subcommand vmm-args" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand vmm-args" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand vmm-args" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand vmm-args" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand vmm-args" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand vmm-args" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand completions" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand completions" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand completions" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand completions" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand completions" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand completions" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand generate" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand generate" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand generate" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand generate" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand generate" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand generate" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand udev-match-group" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand udev-match-group" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand udev-match-group" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand udev-match-group" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand udev-match-group" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand udev-match-group" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and not __fish_seen_subcommand_from init hold load help" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and not __fish_seen_subcommand_from init hold load help" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and not __fish_seen_subcommand_from init hold load help" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and not __fish_seen_subcommand_from init hold load help" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and not __fish_seen_subcommand_from init hold load help" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and not __fish_seen_subcommand_from init hold load help" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and not __fish_seen_subcommand_from init hold load help" -f -a "init" -d 'Build a simulated sysfs tree under --root'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and not __fish_seen_subcommand_from init hold load help" -f -a "hold" -d 'Pretend process PID holds the vGPU\'s VFIO node'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and not __fish_seen_subcommand_from init hold load help" -f -a "load" -d 'Program the vGPU\'s simulated load: each statistics reading is one simulated second later and adds N to each named gvt/stats counter (or sets a text value)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and not __fish_seen_subcommand_from init hold load help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from init" -l fixture -d 'Comma-separated: gvt-rs (virtual parent gvt-sim0), gvt-rs-pci (PCI parent 0000:00:04.0), i915, mtty' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from init" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from init" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from init" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from init" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from init" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from init" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from hold" -l pid -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from hold" -l command -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from hold" -l vm-name -d 'The VM name its command line gives (`-name guest=NAME,...`)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from hold" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from hold" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from hold" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from hold" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from hold" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from hold" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from load" -l rate -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from load" -l root -d 'Resolve /sys, /dev, /proc and /etc under DIR (tests, chroots)' -r -F
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from load" -l timeout -d 'Seconds to wait for a created device to appear (or a removed one to go)' -r
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from load" -l json -d 'Print machine-readable JSON (stable schema, see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from load" -l syslog -d 'Also send every line printed to the system log (/dev/log, else /dev/kmsg); the udev rules use it, as udev discards what the commands it runs print'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from load" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from load" -s h -l help -d 'Print help'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from help" -f -a "init" -d 'Build a simulated sysfs tree under --root'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from help" -f -a "hold" -d 'Pretend process PID holds the vGPU\'s VFIO node'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from help" -f -a "load" -d 'Program the vGPU\'s simulated load: each statistics reading is one simulated second later and adds N to each named gvt/stats counter (or sets a text value)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand sim; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "types" -d 'List parents and their mdev types: partition, instances left'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "create" -d 'Create a vGPU by requested partition or by type; prints its UUID and VMM arguments'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "destroy" -d 'Remove an active vGPU (refused while a VMM holds it)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "list" -d 'List vGPUs: active and defined, with partition, VFIO node and users'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "info" -d 'Everything about one vGPU'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "define" -d 'Write a persistent definition (mdevctl format) without starting it'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "undefine" -d 'Delete a persistent definition (a running vGPU keeps running)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "start" -d 'Start a defined vGPU, or (--auto) every auto-start definition'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "stop" -d 'Stop (remove) a running vGPU, keeping its definition'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "autostart" -d 'Turn starting at boot / parent registration on or off for a definition'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "modify" -d 'Change a definition\'s attributes or start mode, or (--live) a running vGPU\'s attributes'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "stats" -d 'Engine utilisation, submissions, audits, rejects and traps of running gvt-rs vGPUs over an interval (from two readings of gvt/stats)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "top" -d 'A live table of every running gvt-rs vGPU: engine shares, rates, holder VM'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "vmm-args" -d 'Print the VMM argument for a vGPU (all three VMMs unless --vmm)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "completions" -d 'Print shell completions (bash, zsh, fish, elvish, powershell)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "generate" -d 'Write the man pages, shell completions and --json schemas into DIR (for packaging; the checked-in copies are in gvtctl/doc and gvtctl/schema)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "udev-match-group" -d 'For udev: succeed (and print the UUIDs) if IOMMU group N holds a gvt-rs vGPU'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "sim" -d 'Simulated mdev core for tests and demos (see README.md)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and not __fish_seen_subcommand_from types create destroy list info define undefine start stop autostart modify stats top vmm-args completions generate udev-match-group sim help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and __fish_seen_subcommand_from sim" -f -a "init" -d 'Build a simulated sysfs tree under --root'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and __fish_seen_subcommand_from sim" -f -a "hold" -d 'Pretend process PID holds the vGPU\'s VFIO node'
complete -c gvtctl -n "__fish_gvtctl_using_subcommand help; and __fish_seen_subcommand_from sim" -f -a "load" -d 'Program the vGPU\'s simulated load: each statistics reading is one simulated second later and adds N to each named gvt/stats counter (or sets a text value)'
