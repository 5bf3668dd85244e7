#!/usr/bin/env bash
# torchenv on one GPU node, in one go: machine facts, a frozen spec of the node, doctor, the smoke
# suite with a GPU required, the bench against the datasheet, a comparison with the committed CPU
# report, torch.compile on the GPU, and the suite-speed benchmark; everything packed under OUT.
#
#   bash benchmarks/gpu/run.sh [--out DIR] [--deadline SECONDS] [--python PATH] [--cpu-dry-run]
#
# For a node with torch already installed and no network: nothing is installed, torchenv runs from
# this checkout (PYTHONPATH=src). One global deadline (default 230 s, so two runs fit in ten
# minutes of an H200); every step is bounded by `timeout -k` to what is left of it, and skipped
# when too little is. Results: OUT (default $OUT, else ./gpu-results) gets three files:
# torchenv-gpu-results.tar.gz (every step's output), summary.txt (one screen) and summary.json.
#
# --cpu-dry-run runs every step on this machine's CPU with the network shut (`unshare -n`; where
# that is refused the summary says so and why): GPU checks are not required (--no-expect-cuda),
# and the check and bench run short groups (check: facts, tensor, no notebook; bench: matmul,
# copy; suite speed: tensor only, cold run only) to keep it short on 2 CPU cores (measured: 506 s
# on 2 cores shared with five other jobs, load average 15-20; quiet cores were not at hand).
#
# Exit status: 0 when every step ran and passed, 1 when a step failed, timed out or was skipped,
# 2 for bad usage, 130/143/129 when interrupted (the running step's process group is stopped).
set -u

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
}

die_usage() {
    echo "benchmarks/gpu/run.sh: $1" >&2
    echo "usage: bash benchmarks/gpu/run.sh [--out DIR] [--deadline SECONDS] [--python PATH] [--cpu-dry-run]" >&2
    exit 2
}

MODE=gpu
OUT_DIR=${OUT:-}
DEADLINE=230
PY=${PYTHON:-python3}
ARGS=("$@")
while [ $# -gt 0 ]; do
    case $1 in
        --cpu-dry-run) MODE=cpu-dry-run ;;
        --out) [ $# -ge 2 ] || die_usage "--out needs a folder"; OUT_DIR=$2; shift ;;
        --out=*) OUT_DIR=${1#--out=} ;;
        --deadline) [ $# -ge 2 ] || die_usage "--deadline needs a number of seconds"; DEADLINE=$2; shift ;;
        --deadline=*) DEADLINE=${1#--deadline=} ;;
        --python) [ $# -ge 2 ] || die_usage "--python needs an interpreter"; PY=$2; shift ;;
        --python=*) PY=${1#--python=} ;;
        -h | --help) usage; exit 0 ;;
        *) die_usage "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
case $DEADLINE in
    '' | *[!0-9]*) die_usage "--deadline '$DEADLINE' is not a whole number of seconds" ;;
esac
[ "$DEADLINE" -ge 60 ] || die_usage "--deadline $DEADLINE is under 60 s: too short for any step (default 230)"
command -v "$PY" >/dev/null 2>&1 || die_usage "--python '$PY' is not an interpreter on PATH (pass --python PATH)"
command -v timeout >/dev/null 2>&1 || { echo "benchmarks/gpu/run.sh: needs GNU timeout (coreutils)" >&2; exit 2; }

REPO=$(cd "$(dirname "$0")/../.." && pwd)
[ -f "$REPO/src/torchenv/__init__.py" ] || die_usage "run it from a torchenv checkout ($REPO has no src/torchenv)"
OUT_DIR=${OUT_DIR:-$PWD/gpu-results}

# The dry run shuts the network by running itself again in a new network namespace.
NETWORK="not shut (GPU node: expected to have none)"
if [ "$MODE" = cpu-dry-run ]; then
    if [ "${TORCHENV_GPU_NETNS:-}" = shut ]; then
        lo="loopback up"
        ip link set lo up 2>/dev/null || lo="LOOPBACK DOWN (no \`ip\`): local rendezvous will fail"
        # /sys/class/net is the host's; the namespace's own interfaces come from if_nameindex()
        ifaces=$("$PY" -c 'import socket; print(" ".join(n for _, n in socket.if_nameindex()))' 2>&1)
        NETWORK="shut (unshare -n; interfaces: ${ifaces:-none}; $lo)"
    elif err=$(unshare -n true 2>&1); then
        TORCHENV_GPU_NETNS=shut exec unshare -n -- bash "$0" "${ARGS[@]}"
    else
        NETWORK="OPEN: unshare -n was refused ($(echo "$err" | head -n1)); run as root or where user namespaces are allowed"
    fi
fi

if [ -e "$OUT_DIR" ] && { [ -L "$OUT_DIR" ] || [ ! -d "$OUT_DIR" ]; }; then
    die_usage "--out $OUT_DIR exists and is not a folder"
fi
mkdir -p "$OUT_DIR" || die_usage "--out $OUT_DIR cannot be created"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/torchenv-gpu.XXXXXXXX") || { echo "cannot make a temp folder" >&2; exit 1; }
R=$WORK/results
mkdir -m 0700 "$R" "$WORK/cache"
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export TORCHENV_CACHE_DIR="$WORK/cache"
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1  # nothing is installed here; a stray pip finds nothing
export PYTHONDONTWRITEBYTECODE=1
: >"$R/steps.tsv"

CHILD=
cleanup() { rm -rf "$WORK"; }
# shellcheck disable=SC2329  # called by the traps below
on_signal() {  # stop the running step's whole process group (timeout leads it), clean up, exit 128+N
    local code=$1
    trap '' INT TERM HUP
    if [ -n "$CHILD" ]; then
        kill -TERM "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    echo "benchmarks/gpu/run.sh: interrupted; partial results discarded" >&2
    cleanup
    exit "$code"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

RESERVE=15   # seconds kept for packing the results
FAILED=0

step() {  # step NAME CAP COMMAND...: run under min(CAP, time left); log rc, seconds, a note
    # (FINDINGS_RC=1 step ...: exit 1 means "findings to read", not a failure: doctor's contract)
    local name=$1 cap=$2 findings=${FINDINGS_RC:-}
    shift 2
    local left=$((DEADLINE - SECONDS - RESERVE))
    if [ "$left" -lt 10 ]; then
        printf '%s\tSKIPPED\t0\tno time left of the %s s deadline\n' "$name" "$DEADLINE" >>"$R/steps.tsv"
        FAILED=1
        return 0
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    local t0=$SECONDS rc note=""
    echo "[$(date -u +%T)] $name (limit ${cap} s)" >&2
    timeout -k 10 "$cap" "$@" >"$R/$name.out" 2>&1 &
    CHILD=$!
    wait "$CHILD"
    rc=$?
    CHILD=
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        note="TIMED OUT after ${cap} s"
    elif [ -n "$findings" ] && [ "$rc" = "$findings" ]; then
        note="findings: read $name.json / $name.out"
    elif [ "$rc" -ne 0 ]; then
        note=$(grep -v '^[[:space:]]*$' "$R/$name.out" | tail -n1 | tr '\t' ' ' | cut -c1-80)
    fi
    [ "$rc" -eq 0 ] || [ "$rc" = "$findings" ] || FAILED=1
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$note" >>"$R/steps.tsv"
    return 0
}

skip() {  # skip NAME REASON
    printf '%s\tSKIPPED\t0\t%s\n' "$1" "$2" >>"$R/steps.tsv"
}

# per-step caps: sized for an H200 node; a CPU dry run's steps are slower (CPU matmuls, a shared CI
# machine), so they get more, and the global deadline still bounds the whole run
if [ "$MODE" = gpu ]; then
    CHECK_CAP=150 BENCH_CAP=120 SUITE_CAP=90
else
    CHECK_CAP=240 BENCH_CAP=240 SUITE_CAP=180
fi
if [ "$MODE" = gpu ]; then
    EXPECT=--expect-cuda
    CHECK_ONLY=(--only facts --only tensor --only torchvision --only transfer --only cnn --only distributed)
    BENCH_ONLY=(--only matmul --only copy --only cnn)
    SUITE_ARGS=(--repeat 1 --only facts --only tensor --only cnn)
else
    EXPECT=--no-expect-cuda
    CHECK_ONLY=(--only facts --only tensor)
    BENCH_ONLY=(--only matmul --only copy)
    SUITE_ARGS=(--repeat 0 --only tensor)
fi

# 0. the machine, without torchenv
if [ "$MODE" = gpu ] && command -v nvidia-smi >/dev/null 2>&1; then
    step nvidia-smi 30 nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,driver_version,compute_cap,pcie.link.gen.max,pcie.link.width.max,clocks.max.sm,clocks.max.memory,memory.total,power.limit --format=csv
else
    skip nvidia-smi "$([ "$MODE" = gpu ] && echo 'nvidia-smi is not on PATH' || echo 'CPU dry run')"
fi
step machine 90 "$PY" "$REPO/benchmarks/gpu/node.py" machine "$R/machine.json"

# 1. a spec of this machine: `torchenv spec freeze`, else the script's own fallback (said so)
SPEC_FILE=$R/spec.toml
VARIANT=gpu-node
if "$PY" -m torchenv spec --help 2>/dev/null | grep -q freeze; then
    step spec 60 "$PY" -m torchenv spec freeze --name "$VARIANT" -o "$SPEC_FILE"
    if [ -s "$SPEC_FILE" ] && tail -n1 "$R/steps.tsv" | grep -q $'^spec\t0\t'; then
        SPEC_NOTE="frozen by \`torchenv spec freeze --name $VARIANT\`"
    else
        SPEC_NOTE="FALLBACK: \`torchenv spec freeze\` failed (spec.out)"
    fi
else
    SPEC_NOTE="FALLBACK: this checkout has no \`torchenv spec freeze\`"
fi
if [ "${SPEC_NOTE#FALLBACK}" != "$SPEC_NOTE" ]; then
    VARIANT=pip
    SPEC_NOTE="$SPEC_NOTE; benchmarks/gpu/node.py fallback-spec wrote variant pip"
    step spec-fallback 60 "$PY" "$REPO/benchmarks/gpu/node.py" fallback-spec "$SPEC_FILE"
fi
SPEC=(--spec "$SPEC_FILE" --variant "$VARIANT")

# 2. doctor (exit 1 = findings, read doctor.out)
FINDINGS_RC=1 step doctor 60 "$PY" -m torchenv doctor "${SPEC[@]}" --json "$R/doctor.json"

# 3. the smoke suite (all groups but compile), a GPU required on a GPU node
NOTEBOOK=()
if [ "$MODE" != gpu ]; then
    skip notebook "CPU dry run: left out for time (a GPU run adds --notebook to the check)"
elif "$PY" -c "import nbclient, nbformat, ipykernel" >/dev/null 2>&1; then
    NOTEBOOK=(--notebook)
else
    skip notebook "nbclient, nbformat or ipykernel does not import here: the check runs without --notebook"
fi
step check "$CHECK_CAP" "$PY" -m torchenv check "${SPEC[@]}" "$EXPECT" --json "$R/check.json" --junit "$R/check.junit.xml" "${CHECK_ONLY[@]}" "${NOTEBOOK[@]}"

# 4. the bench against the datasheet peaks and the host link
step bench "$BENCH_CAP" "$PY" -m torchenv bench "${SPEC[@]}" "${BENCH_ONLY[@]}" --json "$R/bench.json" --plot "$R/bench.png"

# 5. this node against the committed CPU report
BASELINE=$REPO/benchmarks/results/cpu/check.json
if [ -f "$R/check.json" ]; then
    step compare 30 "$PY" -m torchenv compare "$BASELINE" "$R/check.json" --markdown "$R/compare.md"
else
    skip compare "no check report to compare"
fi

# 6. torch.compile on the GPU (a cold Triton compile takes 30-60 s)
if [ "$MODE" = gpu ]; then
    step check-compile 120 "$PY" -m torchenv check "${SPEC[@]}" "$EXPECT" --only compile --json "$R/check-compile.json"
else
    skip check-compile "CPU dry run: torch.compile on CPU is the check step's job in CI"
fi

# 7. the suite-speed benchmark, where this checkout has one
if [ -f "$REPO/benchmarks/smoke_suite.py" ]; then
    step suite-speed "$SUITE_CAP" "$PY" "$REPO/benchmarks/smoke_suite.py" --python "$PY" "${SPEC[@]}" "${SUITE_ARGS[@]}" --json "$R/smoke_suite.json"
else
    skip suite-speed "benchmarks/smoke_suite.py is not in this checkout"
fi

# 8. issue 18's benchmark: `torchenv check` against the peer-equivalent workload (PyTorch's release
# smoke test), cold then warm, on this node's cores (its torch may not be the spec's: the check then
# fails facts.torch_version, which peer_suite notes, and the timings still stand)
if [ "$MODE" = gpu ]; then
    NODE_TORCH=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || echo unknown)
    step peer-suite 100 "$PY" "$REPO/benchmarks/peer_suite.py" --python "$PY" --rounds 1 --warm-rounds 1 \
        --torch-version "$NODE_TORCH"
else
    skip peer-suite "CPU dry run: benchmarks/peer_suite.py is timed on CPU by hand (about 60 s more)"
fi

# hang dumps the smoke suite's plugin left (only a killed check leaves a faulthandler dump)
find "${TMPDIR:-/tmp}" -maxdepth 2 -path '*torchenv-check-*' -name stacks.txt -newer "$R/steps.tsv" 2>/dev/null |
    while read -r f; do grep -q "most recent call first" "$f" && cp "$f" "$R/stacks-$(basename "$(dirname "$f")").txt"; done

"$PY" "$REPO/benchmarks/gpu/node.py" finish --results "$R" --out "$OUT_DIR" --mode "$MODE" \
    --network "$NETWORK" --spec-note "$SPEC_NOTE" --deadline "$DEADLINE" --elapsed "$SECONDS"
rc=$?
cleanup
[ "$rc" -eq 0 ] || exit 1
exit "$FAILED"
