#!/usr/bin/env bash
# cloud-hypervisor for the VM rig: a second VMM the L1 guest runs with KVM
# (tests/vm/tests/cloud_hypervisor.rs).  Built once, statically, with the
# host's cargo from the snapshots in the shared vendor directory (its git
# dependency micro_http is pointed at the unpacked micro-http snapshot), and
# cached as $CACHE/cloud-hypervisor; the stamp is the two sources' sha256 and
# the build command, so a new snapshot rebuilds it and nothing else does.
source "$(dirname "$0")/common.sh"
serialize build-cloud-hypervisor
CH_TAR="cloud-hypervisor-54.0.0-git-ae44c2971.tar.gz"
MH_TAR="micro-http-git-7975fe0.tar.gz"
vendor=""
for d in "${GVT_VENDOR:-}" "$REPO/../shared/vendor" "$REPO/../../shared/vendor" /work/shared/vendor; do
  [ -n "$d" ] && [ -f "$d/$CH_TAR" ] && { vendor="$d"; break; }
done
[ -n "$vendor" ] || die "no $CH_TAR: set GVT_VENDOR to the directory holding the shared vendor snapshots"
out="$CACHE/cloud-hypervisor"
features="--no-default-features --features kvm"
id="ch-v1 $(cd "$vendor" && sha256sum "$CH_TAR" "$MH_TAR" | cut -d' ' -f1 | tr '\n' ' ')$features crt-static"
if [ -x "$out" ] && [ "$(cat "$out.id" 2>/dev/null)" = "$id" ]; then
  log "cloud-hypervisor cached at $out"; exit 0
fi
command -v cargo >/dev/null || die "cloud-hypervisor is built with the host's cargo: none on PATH"
src="$CACHE/cloud-hypervisor-src"
# The unpacked sources and the build tree stay until the binary is cached
# (an interrupted build resumes); a different snapshot starts afresh.
if [ "$(cat "$src/.unpacked" 2>/dev/null)" != "$id" ]; then
  rm -rf "$src"; mkdir -p "$src/cloud-hypervisor" "$src/micro-http"
  tar -C "$src/cloud-hypervisor" --strip-components=1 -xzf "$vendor/$CH_TAR"
  tar -C "$src/micro-http" --strip-components=1 -xzf "$vendor/$MH_TAR"
  [ -f "$src/cloud-hypervisor/Cargo.toml" ] && [ -f "$src/micro-http/Cargo.toml" ] \
    || die "unexpected layout of the vendor snapshots"
  # The git dependency, by path (the locked commit is the snapshot's).
  mh_lines=$(grep -rln '^micro_http *= *{ *git' "$src/cloud-hypervisor" --include=Cargo.toml || true)
  [ -n "$mh_lines" ] || die "no micro_http git dependency found in the cloud-hypervisor snapshot"
  for f in $mh_lines; do
    sed -i "s|^micro_http *= *{ *git[^}]*}|micro_http = { path = \"$src/micro-http\" }|" "$f"
  done
  echo "$id" > "$src/.unpacked"
fi
# Its release profile is for shipping (lto = true, codegen-units = 1): one
# serial whole-program optimisation at the end, on one core.  A test VMM
# does not need that: no LTO and 16 codegen units let both cores work
# (profile overrides through cargo's environment; the snapshot is unchanged;
# the stamp stays: a binary built either way serves the same).
step "building cloud-hypervisor (static, --features kvm, no LTO)" \
  env -C "$src/cloud-hypervisor" CARGO_TARGET_DIR="$src/target" RUSTFLAGS='-C target-feature=+crt-static' \
  CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  cargo build --release --target x86_64-unknown-linux-gnu -p cloud-hypervisor $features
bin="$src/target/x86_64-unknown-linux-gnu/release/cloud-hypervisor"
file "$bin" | grep -Eq 'statically linked|static-pie linked' || die "$bin is not a static binary"
cp "$bin" "$out.tmp"; mv "$out.tmp" "$out"
echo "$id" > "$out.id"
# The sources and build tree are not needed once the binary is cached.
rm -rf "$src"
log "cloud-hypervisor: $out ($(stat -c %s "$out") bytes, $("$out" --version | head -1))"
