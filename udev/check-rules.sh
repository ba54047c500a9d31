#!/usr/bin/env bash
# Check the syntax of udev/*.rules with the host's udev.
#  - `udevadm verify` (systemd >= 253) when available;
#  - otherwise (systemd 252, Debian 12) `udevadm test`, run in a private mount namespace
#    where only these rules are visible, failing on any parse complaint about them.
# Exit 0: verified; 1: a rule is invalid; 77: no udevadm (skipped, says so).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
rules=("$here"/*.rules)
if ! command -v udevadm >/dev/null; then
  echo "SKIP: udevadm not installed (apt-get install udev); rule syntax not verified" >&2
  exit 77
fi
if udevadm verify --help >/dev/null 2>&1; then
  udevadm verify --resolve-names=never "${rules[@]}"
  echo "udevadm verify: ${#rules[@]} rules files OK"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v unshare >/dev/null; then
  echo "SKIP: udevadm $(udevadm --version) has no 'verify' and 'udevadm test' needs root + unshare" >&2
  exit 77
fi
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/rules" "$tmp/empty"
cp "${rules[@]}" "$tmp/rules/"
# Any device will do: the rules are parsed in full before matching.
dev=/sys/class/mem/null; [ -e "$dev" ] || dev="$(ls -d /sys/class/*/* | head -n1)"
unshare -m bash -c "
  mount --make-rprivate /
  for d in /usr/lib/udev/rules.d /lib/udev/rules.d /run/udev/rules.d; do
    [ -d \$d ] && mount --bind '$tmp/empty' \$d
  done
  mkdir -p /etc/udev/rules.d && mount --bind '$tmp/rules' /etc/udev/rules.d
  udevadm test --action=add '$dev'
" >"$tmp/out" 2>&1 || true
for r in "${rules[@]}"; do
  grep -q "Reading rules file: /etc/udev/rules.d/$(basename "$r")" "$tmp/out" \
    || { cat "$tmp/out" >&2; echo "FAIL: udevadm did not read $(basename "$r")" >&2; exit 1; }
done
if grep -E "/etc/udev/rules.d/[^:]+:[0-9]+" "$tmp/out" >&2; then
  echo "FAIL: udevadm test reported problems in the rules above" >&2
  exit 1
fi
echo "udevadm $(udevadm --version) test: ${#rules[@]} rules files parsed without complaints"
