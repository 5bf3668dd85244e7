#!/usr/bin/env bash
# A three-node Slurm cluster on this one machine, for `torchenv submit`'s and `torchenv vet`'s
# integration tests.
#
# Each slurmd runs in its own network namespace with its own address on a bridge, and its own UTS
# hostname, so an all-reduce really crosses a (virtual) network, and one node's link can be slowed
# (`tc qdisc add dev tvs-tnode3 root tbf ...`: this kernel has no netem) while its peers' are not:
#
#   root namespace: bridge $BR 10.213.0.1/24, slurmctld, munged, the Slurm client commands
#   netns torchenv-tnode1: eth0 10.213.0.11, hostname tnode1, slurmd -N tnode1
#   netns torchenv-tnode2: eth0 10.213.0.12, hostname tnode2, slurmd -N tnode2
#   netns torchenv-tnode3: eth0 10.213.0.13, hostname tnode3, slurmd -N tnode3
#
# Partitions: both (default: tnode1+tnode2, what the two-node submit tests use), all (the three
# nodes: a pair cannot tell which of its ends is slow, three can), node1, node2, node3 (one node
# each), closed (State=DOWN: jobs there pend forever with Reason=PartitionDown).
#
# Installs nothing: needs Debian's slurmctld slurmd slurm-client munge iproute2 iptables (root).
# Everything lives under $TORCHENV_SLURM_DIR (default /var/tmp/torchenv-slurm); nothing goes to
# /etc/slurm. Use the cluster with `export SLURM_CONF=$TORCHENV_SLURM_DIR/slurm.conf`.
# Idempotent: a healthy cluster is left as it is; anything else is torn down
# (tests/infra/slurm-down.sh) and started afresh. Measured recipe: ../../../shared/DESIGN.md,
# "Slurm on one machine" and "Two Slurm nodes on one machine".
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/infra/slurm-env.sh
. "$HERE/slurm-env.sh"
export SLURM_CONF

for tool in slurmctld slurmd sinfo munged munge unmunge ip iptables nsenter unshare; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "slurm-up: $tool is missing: apt-get install -y --no-install-recommends" \
      "slurmctld slurmd slurm-client munge iproute2 iptables" >&2
    exit 2
  fi
done
if [ "$(id -u)" != 0 ]; then
  echo "slurm-up: needs root (network namespaces, a bridge, iptables, /etc/hosts)" >&2
  exit 2
fi

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
healthy() {
  [ -f "$SLURM_CONF" ] || return 1
  alive "$SLURM_DIR/run/slurmctld.pid" || return 1
  local node states
  for node in "${NODES[@]}"; do
    alive "$SLURM_DIR/run/slurmd-$node.pid" || return 1
  done
  states=$(timeout 10 sinfo -h -N -p all -o '%N %T' 2>/dev/null | sort -u) || return 1
  [ "$states" = "$(printf '%s idle\n' "${NODES[@]}")" ]
}
if healthy; then
  echo "slurm-up: the ${#NODES[@]}-node cluster is already up (SLURM_CONF=$SLURM_CONF)"
  exit 0
fi

t0=$(date +%s.%N)
bash "$HERE/slurm-down.sh" >/dev/null 2>&1 || true
mkdir -p "$SLURM_DIR"/{state,run,log}
for node in "${NODES[@]}"; do mkdir -p "$SLURM_DIR/spool/$node"; done

# munge: reuse a working one, else start our own (slurm-down stops only the one we started).
if ! (munge -n 2>/dev/null | unmunge >/dev/null 2>&1); then
  if [ ! -s /etc/munge/munge.key ]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  cp /run/munge/munged.pid "$SLURM_DIR/run/munged.pid"
  for _ in $(seq 50); do (munge -n | unmunge >/dev/null 2>&1) && break; sleep 0.1; done
fi

# The network: a bridge in this namespace, one namespace per node with a veth on the bridge.
ip link add "$BR" type bridge
ip addr add "$CTL_ADDR/24" dev "$BR"
ip link set "$BR" up
for i in "${!NODES[@]}"; do
  node=${NODES[$i]} addr=${ADDRS[$i]}
  ns=$(netns_of "$node") veth=$(veth_of "$node")
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$BR" up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  # No default route on purpose: DNS is unreachable from a node, so a lookup that misses
  # /etc/hosts (torch's reverse lookups of its peers) fails at once instead of timing out (5-10 s).
done
# Docker sets the FORWARD policy to DROP, which would drop traffic bridged between the nodes.
iptables -C FORWARD -i "$BR" -o "$BR" -j ACCEPT 2>/dev/null || iptables -I FORWARD 1 -i "$BR" -o "$BR" -j ACCEPT
# Names: srun and torchrun find each node by its hostname. Our lines carry a marker; slurm-down
# removes exactly them. The file is rewritten in place (it may be a bind mount).
hosts_without_ours >"$SLURM_DIR/hosts.tmp"
for i in "${!NODES[@]}"; do
  printf '%s %s %s\n' "${ADDRS[$i]}" "${NODES[$i]}" "$HOSTS_MARK" >>"$SLURM_DIR/hosts.tmp"
done
cat "$SLURM_DIR/hosts.tmp" >/etc/hosts
rm -f "$SLURM_DIR/hosts.tmp"

# slurm.conf: the machine's real CPU topology (slurmd drains a node that claims more), little memory.
read -r cpus boards sockets cores threads < <(slurmd -C | head -n 1 | tr ' ' '\n' | awk -F= '
  /^CPUs=/ {c=$2} /^Boards=/ {b=$2} /^SocketsPerBoard=/ {s=$2} /^CoresPerSocket=/ {k=$2}
  /^ThreadsPerCore=/ {t=$2} END {print c, b, s, k, t}')
{
  cat <<EOF
# Written by tests/infra/slurm-up.sh: a ${#NODES[@]}-node test cluster on one machine.
ClusterName=torchenv-test
SlurmctldHost=$(hostname)($CTL_ADDR)
SlurmctldPort=$CTL_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_DIR/log/jobcomp.txt
MailProg=/bin/true
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
MinJobAge=600
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool/%n
SlurmctldPidFile=$SLURM_DIR/run/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/run/slurmd-%n.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd-%n.log
EOF
  for i in "${!NODES[@]}"; do
    echo "NodeName=${NODES[$i]} NodeAddr=${ADDRS[$i]} NodeHostname=${NODES[$i]} CPUs=$cpus Boards=$boards" \
      "SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=1000 State=UNKNOWN"
  done
  echo "PartitionName=both Nodes=tnode1,tnode2 Default=YES MaxTime=INFINITE State=UP"
  echo "PartitionName=all Nodes=$(IFS=,; echo "${NODES[*]}") MaxTime=INFINITE State=UP"
  for i in "${!NODES[@]}"; do
    echo "PartitionName=node$((i + 1)) Nodes=${NODES[$i]} MaxTime=INFINITE State=UP"
  done
  echo "PartitionName=closed Nodes=tnode1,tnode2 MaxTime=INFINITE State=DOWN"
} >"$SLURM_CONF"

slurmctld -f "$SLURM_CONF"
for node in "${NODES[@]}"; do
  # Not `ip netns exec`: it remounts /sys, and slurmd then fails on cgroups.
  nsenter --net="/run/netns/$(netns_of "$node")" unshare --uts \
    sh -c "hostname $node && exec slurmd -f '$SLURM_CONF' -N $node"
done
for _ in $(seq 300); do
  healthy && break
  sleep 0.1
done
if ! healthy; then
  echo "slurm-up: the nodes did not come up idle:" >&2
  sinfo -N -l >&2 || true
  tail -n 20 "$SLURM_DIR"/log/*.log >&2 || true
  exit 1
fi
t1=$(date +%s.%N)
sinfo
echo "slurm-up: ${#NODES[@]} nodes idle in $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s;" \
  "export SLURM_CONF=$SLURM_CONF"
