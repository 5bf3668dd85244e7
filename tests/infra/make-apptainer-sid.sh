#!/usr/bin/env bash
# Apptainer for this machine: Debian sid's apptainer (bookworm has none) in a sid rootfs, entered
# through ./apptainer-sid (a drop-in `apptainer`). Idempotent. Needs root and debootstrap.
# Measured recipe: ../../../shared/DESIGN.md, "Apptainer on these machines".
set -euo pipefail
ROOT=${APPTAINER_SID_ROOT:-/var/tmp/torchenv-infra/sid}
if [ -x "$ROOT/usr/bin/apptainer" ]; then
  echo "apptainer rootfs exists at $ROOT"
  exit 0
fi
t0=$SECONDS
rm -rf "$ROOT"
mkdir -p "$(dirname "$ROOT")"
debootstrap --variant=minbase --include=apptainer,squashfuse,fuse2fs,libcap2-bin \
  sid "$ROOT" http://deb.debian.org/debian >"$ROOT.debootstrap.log" 2>&1 \
  || { tail -20 "$ROOT.debootstrap.log"; exit 1; }
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
echo "root:100000:65536" >>"$ROOT/etc/subuid"
echo "root:100000:65536" >>"$ROOT/etc/subgid"
# This VM's bounding set lacks CAP_SYS_RESOURCE: give root file-based default capabilities and
# grant it the capabilities it does have.
conf="$ROOT/etc/apptainer/apptainer.conf"
sed -i 's/^root default capabilities.*/root default capabilities = file/' "$conf"
caps=$(capsh --decode="$(awk '/CapBnd/ {print $2}' /proc/self/status)" | sed 's/.*=//')
chroot "$ROOT" apptainer capability add --user root "$caps" >/dev/null 2>&1
rm -rf "$ROOT/var/cache/apt/archives/"*.deb
echo "apptainer rootfs at $ROOT: $((SECONDS - t0))s"
