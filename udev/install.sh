#!/usr/bin/env bash
# Install the gvt-rs udev rules.
#   sudo udev/install.sh                      # -> /etc/udev/rules.d, reload udev
#   DESTDIR=pkg RULESDIR=/usr/lib/udev/rules.d udev/install.sh   # packaging, no reload
#   GVTCTL=/usr/local/bin/gvtctl sudo udev/install.sh            # gvtctl elsewhere
#   VFIO_GROUP=libvirt-qemu sudo udev/install.sh                 # group for /dev/vfio/N
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
RULESDIR="${RULESDIR:-/etc/udev/rules.d}"
GVTCTL="${GVTCTL:-/usr/bin/gvtctl}"
dest="${DESTDIR:-}$RULESDIR"
mkdir -p "$dest"
for r in 60-gvt-rs-autostart.rules 70-gvt-rs-vfio.rules; do
  sed "s#/usr/bin/gvtctl#$GVTCTL#g" "$here/$r" > "$dest/$r"
  chmod 0644 "$dest/$r"
  echo "installed $dest/$r"
done
if [ -n "${VFIO_GROUP:-}" ]; then
  printf 'SUBSYSTEM=="vfio", ENV{GVT_RS_VFIO_GROUP}="%s"\n' "$VFIO_GROUP" > "$dest/69-gvt-rs-vfio-group.rules"
  echo "installed $dest/69-gvt-rs-vfio-group.rules (group $VFIO_GROUP)"
fi
[ -x "$GVTCTL" ] || echo "warning: $GVTCTL not found; the rules run it (set GVTCTL=...)" >&2
if [ -z "${DESTDIR:-}" ] && command -v udevadm >/dev/null; then
  udevadm control --reload && echo "udev rules reloaded"
fi
