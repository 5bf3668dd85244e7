#!/usr/bin/env bash
# Make the local stand-in for the NGC base image: a debootstrapped Debian (python3, g++ for
# torch.compile, CA certificates) imported into Docker, with torch 2.13.0+cpu from this machine's
# wheels. Idempotent: an existing image is kept. Needs root, a running Docker engine, debootstrap.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
IMAGE=${1:-local/ngc-standin:2.13.0-cpu-jupyter}
WORK=${TORCHENV_INFRA_DIR:-/var/tmp/torchenv-infra}
DOCKER=${DOCKER:-/usr/bin/docker}
mkdir -p "$WORK"

if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "stand-in $IMAGE exists"
  exit 0
fi
t0=$SECONDS
if ! "$DOCKER" image inspect local/debian:bookworm-py >/dev/null 2>&1; then
  rm -rf "$WORK/bookworm"
  debootstrap --variant=minbase --include=python3,python3-pip,python3-dev,g++,ca-certificates \
    bookworm "$WORK/bookworm" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; exit 1; }
  rm -rf "$WORK/bookworm/var/cache/apt/archives/"*.deb "$WORK/bookworm/var/lib/apt/lists/"*
  tar -C "$WORK/bookworm" -c . | "$DOCKER" import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - local/debian:bookworm-py
  rm -rf "$WORK/bookworm"
  echo "base local/debian:bookworm-py: $((SECONDS - t0))s"
fi
ctx="$WORK/standin-ctx"
rm -rf "$ctx" && mkdir -p "$ctx/wheels"
python3.11 -m pip download --quiet --only-binary=:all: -d "$ctx/wheels" \
  torch==2.13.0 pytest packaging numpy ipykernel nbclient nbformat matplotlib
cp "$here/ngc-standin.Dockerfile" "$ctx/Dockerfile"
"$DOCKER" build -q -t "$IMAGE" "$ctx"
rm -rf "$ctx"
echo "stand-in $IMAGE: $((SECONDS - t0))s"
