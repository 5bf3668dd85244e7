# shellcheck shell=bash disable=SC2034  # the scripts that source this file use these variables
# Shared by slurm-up.sh and slurm-down.sh: where the three-node test cluster lives and how it is wired.
SLURM_DIR=${TORCHENV_SLURM_DIR:-/var/tmp/torchenv-slurm}
SLURM_CONF=$SLURM_DIR/slurm.conf
BR=${TORCHENV_SLURM_BRIDGE:-tvslurm0}
CTL_ADDR=10.213.0.1
CTL_PORT=6817
SLURMD_PORT=6818
NODES=(tnode1 tnode2 tnode3)
ADDRS=(10.213.0.11 10.213.0.12 10.213.0.13)
HOSTS_MARK="# torchenv-slurm test cluster"

netns_of() { echo "torchenv-$1"; }
veth_of() { echo "tvs-$1"; }
# /etc/hosts without the lines slurm-up added.
hosts_without_ours() { grep -vF "$HOSTS_MARK" /etc/hosts || true; }
