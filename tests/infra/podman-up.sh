#!/usr/bin/env bash
# Start rootful podman's Docker-compatible API service for the tests, and copy the NGC stand-in
# into podman's own image store (podman and Docker keep separate stores).
# Measured here (DESIGN.md): rootful podman needs default_ulimits in a containers.conf, else
# containers fail to start with "setrlimit ... operation not permitted".
# Idempotent; stop it with tests/infra/podman-down.sh. Needs root, Debian's podman, a Docker
# engine holding the stand-in (tests/infra/make-ngc-standin.sh).
set -euo pipefail
IMAGE=${1:-local/ngc-standin:2.13.0-cpu-jupyter}
WORK=${TORCHENV_PODMAN_DIR:-/var/tmp/torchenv-podman}
SOCK=${TORCHENV_PODMAN_SOCK:-/run/podman/podman.sock}
install -d -m 0700 "$WORK"
install -d -m 0755 "$(dirname "$SOCK")"
cat >"$WORK/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
CONF
export CONTAINERS_CONF="$WORK/containers.conf"
t0=$SECONDS
if ! podman image exists "$IMAGE"; then
  podman pull -q "docker-daemon:$IMAGE" >/dev/null
  echo "copied $IMAGE from Docker into podman: $((SECONDS - t0))s"
fi
if [ -f "$WORK/service.pid" ] && kill -0 "$(cat "$WORK/service.pid")" 2>/dev/null; then
  echo "podman service already running (pid $(cat "$WORK/service.pid"))"
  exit 0
fi
rm -f "$SOCK"
setsid podman system service --time=0 "unix://$SOCK" >"$WORK/service.log" 2>&1 </dev/null &
echo $! >"$WORK/service.pid"
for _ in $(seq 100); do
  [ -S "$SOCK" ] && curl -fsS --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS --unix-socket "$SOCK" http://d/_ping >/dev/null || { tail -20 "$WORK/service.log"; exit 1; }
echo "podman service up at unix://$SOCK: $((SECONDS - t0))s"
