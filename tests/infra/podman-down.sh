#!/usr/bin/env bash
# Stop the podman service tests/infra/podman-up.sh started (by its pid file), and any container
# a torchenv build left labelled.
set -uo pipefail
WORK=${TORCHENV_PODMAN_DIR:-/var/tmp/torchenv-podman}
export CONTAINERS_CONF="$WORK/containers.conf"
podman ps -aq --filter label=io.torchenv.build 2>/dev/null | xargs -r podman rm -f >/dev/null 2>&1
if [ -f "$WORK/service.pid" ]; then
  pid=$(cat "$WORK/service.pid")
  kill "$pid" 2>/dev/null && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
  rm -f "$WORK/service.pid"
fi
exit 0
