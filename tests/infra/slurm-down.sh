#!/usr/bin/env bash
# Tear down the test cluster of slurm-up.sh: cancel its jobs, stop its daemons by their
# pid files (and anything left in the nodes' network namespaces), delete the namespaces, the bridge
# and the iptables rule, and remove slurm-up's lines from /etc/hosts. Idempotent; safe when
# nothing is up. Stops munged only if slurm-up started it.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/infra/slurm-env.sh
. "$HERE/slurm-env.sh"
export SLURM_CONF

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() {  # stop PIDFILE: SIGTERM, wait up to 10 s, then SIGKILL
  local pidfile=$1 pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

if alive "$SLURM_DIR/run/slurmctld.pid" && command -v squeue >/dev/null 2>&1; then
  jobs=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086 # one job id per word
    timeout 10 scancel $jobs 2>/dev/null || true
    for _ in $(seq 100); do [ -z "$(timeout 10 squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.1; done
  fi
fi
for node in "${NODES[@]}"; do stop "$SLURM_DIR/run/slurmd-$node.pid"; done
stop "$SLURM_DIR/run/slurmctld.pid"
for node in "${NODES[@]}"; do
  ns=$(netns_of "$node")
  if [ -e "/run/netns/$ns" ]; then
    # Whatever still runs in a node's namespace (job steps, stray ranks) belongs to this cluster.
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    # shellcheck disable=SC2086 # one pid per word
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null
    ip netns del "$ns" 2>/dev/null || true
  fi
  ip link del "$(veth_of "$node")" 2>/dev/null || true
done
ip link del "$BR" 2>/dev/null || true
while iptables -C FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null; do
  iptables -D FORWARD -i "$BR" -o "$BR" -j ACCEPT
done
if grep -qF "$HOSTS_MARK" /etc/hosts 2>/dev/null; then
  hosts_without_ours >"/etc/hosts.torchenv-slurm.tmp"
  cat "/etc/hosts.torchenv-slurm.tmp" >/etc/hosts
  rm -f "/etc/hosts.torchenv-slurm.tmp"
fi
stop "$SLURM_DIR/run/munged.pid"
rm -rf "$SLURM_DIR/state" "$SLURM_DIR/spool"
echo "slurm-down: the test cluster is down"
