#!/usr/bin/env bash
# torchenv `source` variant: build PyTorch (and torchvision) from the spec's release tags, install
# the wheels into a fresh venv and check it with `torchenv check --variant source`.
#
# Steps: get-source -> configure -> build-wheels -> install -> check. Every version and knob comes
# from the spec, rendered by torchenv (`torchenv plan source --format env`) into a settings file:
# nothing here repeats them. `--dry-run` prints every command and variable in order and runs none.
# A rerun reuses the checkouts, the build venv and the compiler cache (ccache, when on PATH). The
# whole log goes to <work>/build.log; a failure names its step and that step's log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

usage() {
  cat <<'EOF'
usage: build.sh [--config FILE] [--spec FILE] [options]

  --config FILE           settings rendered by `torchenv plan source --format env` (default: render
                          them now from --spec with torchenv)
  --spec FILE             the stack.toml the check uses (default: the one the settings came from)
  --work DIR              checkouts, build venv, wheels, compiler cache, log (default: ./build/source)
  --src DIR               PyTorch from DIR: a checkout at the spec's tag (built in place) or a
                          mirror (cloned from) instead of the spec's torch_repo
  --vision-src DIR        the same for torchvision
  --python EXE            interpreter for the venvs (default: python<the spec's Python>)
  --system-site-packages  the venvs see EXE's own packages (a base image that ships torch)
  --venv DIR              the fresh venv to install into (default: <work>/venv; replaced every run)
  --torchenv PATH         torchenv to install there: a checkout, a wheel or a folder with one wheel
                          (default: the checkout holding this script)
  --reports DIR           where the check writes source.json and source.junit.xml (default: <work>/reports)
  --log FILE              the whole log (default: <work>/build.log)
  --no-ccache             do not use ccache even when it is on PATH
  --check-only GROUP      check only this group of the smoke suite (repeatable; default: all)
  --no-check              stop after installing (the container build checks the final image)
  --dry-run               print every command and variable in order; run nothing
EOF
}

config="" spec="" work="" src="" vision_src="" python="" venv="" torchenv_pkg="" reports="" log="" check_only=()
system_site=0 use_ccache=1 do_check=1 dry_run=0
while [ "$#" -gt 0 ]; do
  case $1 in
    --config | --spec | --work | --src | --vision-src | --python | --venv | --torchenv | --reports | --log | --check-only)
      [ "$#" -ge 2 ] || { echo "build.sh: error: $1 needs a value; see build.sh --help" >&2; exit 2; }
      case $1 in
        --config) config=$2 ;;
        --spec) spec=$2 ;;
        --work) work=$2 ;;
        --src) src=$2 ;;
        --vision-src) vision_src=$2 ;;
        --python) python=$2 ;;
        --venv) venv=$2 ;;
        --torchenv) torchenv_pkg=$2 ;;
        --reports) reports=$2 ;;
        --log) log=$2 ;;
        --check-only) check_only+=(--only "$2") ;;
      esac
      shift 2
      ;;
    --system-site-packages) system_site=1; shift ;;
    --no-ccache) use_ccache=0; shift ;;
    --no-check) do_check=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build.sh: error: unknown argument '$1'; see build.sh --help" >&2; exit 2 ;;
  esac
done

absolute() {  # absolute path of $1 without requiring it to exist
  case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$PWD/$1" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Output: progress lines on the terminal and in the log; command output in the log only.

current_step="" step_line=1 refused=0 logging=0
exec 3>&1 4>&2
say() {
  printf '%s\n' "$*" >&3
  if [ "$logging" = 1 ]; then printf '%s\n' "$*"; fi
}

q() {  # words quoted for bash, plain words (and a dry run's wheel globs) bare
  local out=() w
  for w in "$@"; do
    if [[ $w =~ ^[A-Za-z0-9_./:=+,@%-]+$ ]] || [[ $dry_run = 1 && $w == *'/*.whl' ]]; then
      out+=("$w")
    else
      out+=("'${w//\'/\'\\\'\'}'")
    fi
  done
  printf '%s' "${out[*]}"
}

die() {  # die PROBLEM FIX: a refusal (bad settings, wrong checkout, missing tool): exit 2
  refused=1
  local where=""
  [ -n "$current_step" ] && where=" in step '$current_step'"
  printf 'build.sh: error%s: %s Fix: %s\n' "$where" "$1" "$2" >&4
  if [ "$logging" = 1 ]; then printf 'build.sh: error%s: %s Fix: %s\n' "$where" "$1" "$2"; fi
  exit 2
}

run() {  # print a command, then run it (not in a dry run)
  say "+ $(q "$@")"
  [ "$dry_run" = 1 ] && return 0
  "$@"
}

run_to() {  # run_to FILE COMMAND...: the same, with the command's standard output into FILE
  local file=$1
  shift
  say "+ $(q "$@") > $(q "$file")"
  [ "$dry_run" = 1 ] && return 0
  "$@" >"$file"
}

on_exit() {
  local rc=$?
  if { [ "$interrupted" = 1 ] || [ "$rc" -ge 128 ]; } && [ -n "$current_step" ] && [ "$dry_run" = 0 ]; then
    printf "build.sh: interrupted in step '%s'; the log so far: %s\n" "$current_step" "$log" >&4
    return 0
  fi
  if [ "$rc" -ne 0 ] && [ "$refused" = 0 ] && [ -n "$current_step" ] && [ "$logging" = 1 ]; then
    local step_log
    step_log="$(dirname "$log")/logs/$current_step.log"
    mkdir -p "$(dirname "$step_log")"
    tail -n "+$step_line" "$log" >"$step_log"
    {
      printf "build.sh: FAILED in step '%s' (exit %s).\n" "$current_step" "$rc"
      printf "build.sh: that step's log: %s (the whole log: %s).\n" "$step_log" "$log"
      if grep -qE '(^|[^A-Za-z])(error|ERROR|Error):' "$step_log"; then
        echo "build.sh: its first errors:"
        grep -m 5 -E '(^|[^A-Za-z])(error|ERROR|Error):' "$step_log" | sed 's/^/    /'
      fi
      echo "build.sh: its last lines:"
      tail -n 15 "$step_log" | sed 's/^/    /'
    } >&4
    trap - EXIT
    exit 1
  fi
}
trap on_exit EXIT
interrupted=0
on_signal() {
  interrupted=1
  exit 130
}
trap on_signal INT TERM

# ---------------------------------------------------------------------------------------------
# Settings: rendered from the spec by torchenv, never written here.

render_settings() {  # render_settings SPEC FILE
  local cli=()
  if command -v torchenv >/dev/null 2>&1; then
    cli=(torchenv)
  elif [ -f "$repo/src/torchenv/__init__.py" ]; then
    cli=(env "PYTHONPATH=$repo/src${PYTHONPATH:+:$PYTHONPATH}" python3 -m torchenv)
  else
    die "no --config given and torchenv is not installed to render the settings." \
      "pass --config FILE (from \`torchenv plan source --format env\`) or install torchenv"
  fi
  "${cli[@]}" plan source --format env ${1:+--spec "$1"} >"$2" \
    || die "torchenv could not render the settings from the spec (see its message above)." "fix the spec"
}

settings_tmp=""
if [ -z "$config" ]; then
  settings_tmp=$(mktemp)
  config=$settings_tmp
  render_settings "$spec" "$config"
fi
[ -f "$config" ] || die "the settings file $config does not exist." "render it: torchenv plan source --format env > FILE"
if grep -Evq '^(#.*)?$|^[A-Z][A-Z0-9_]*=' "$config"; then
  die "$config is not a torchenv settings file (a line is neither a comment nor NAME=value)." \
    "render it again: torchenv plan source --format env > $config"
fi
# shellcheck source=/dev/null
. "$config"
[ -n "$settings_tmp" ] && rm -f "$settings_tmp"
[ "${TORCHENV_PLAN_SCHEMA:-}" = 1 ] \
  || die "$config is for another version of build.sh (TORCHENV_PLAN_SCHEMA=${TORCHENV_PLAN_SCHEMA:-unset})." \
    "render it with this torchenv: torchenv plan source --format env"
for var in TORCHENV_PYTHON TORCHENV_CUDA TORCHENV_COMPONENTS TORCHENV_BUILD_ENV TORCHENV_SPEC_HASH; do
  [ -n "${!var:-}" ] || die "$config does not set $var." "render it again: torchenv plan source --format env"
done
for var in TORCHENV_NVCC_ARCHS TORCHENV_PACKAGES TORCHENV_SPEC_PATH; do
  [ -n "${!var+set}" ] || die "$config does not set $var." "render it again: torchenv plan source --format env"
done
read -r -a components <<<"$TORCHENV_COMPONENTS"
read -r -a build_env <<<"$TORCHENV_BUILD_ENV"
read -r -a packages <<<"$TORCHENV_PACKAGES"
for name in "${build_env[@]}"; do
  [ -n "${!name+set}" ] || die "$config lists $name in TORCHENV_BUILD_ENV but does not set it." \
    "render it again: torchenv plan source --format env"
done

spec=${spec:-$TORCHENV_SPEC_PATH}
[ "$do_check" = 0 ] || [ -n "$spec" ] || die "the check needs the spec and the settings do not name it." "pass --spec FILE"
work=$(absolute "${work:-build/source}")
venv=$(absolute "${venv:-$work/venv}")
reports=$(absolute "${reports:-$work/reports}")
log=$(absolute "${log:-$work/build.log}")
python=${python:-python$TORCHENV_PYTHON}
torchenv_pkg=${torchenv_pkg:-$repo}
[ -n "$spec" ] && spec=$(absolute "$spec")
build_venv=$work/build-venv
wheels=$work/wheels
ccache_dir=${CCACHE_DIR:-$work/ccache}
venv_flags=()
[ "$system_site" = 1 ] && venv_flags=(--system-site-packages)

steps=(get-source configure build-wheels install)
[ "$do_check" = 1 ] && steps+=(check)

if [ "$dry_run" = 0 ]; then
  mkdir -p "$work" "$(dirname "$log")"
  : >"$log"
  exec >>"$log" 2>&1
  logging=1
fi

step_started=$SECONDS
step_done() {
  if [ -n "$current_step" ] && [ "$dry_run" = 0 ]; then say "# $current_step took $((SECONDS - step_started))s"; fi
  step_started=$SECONDS
}

step() {
  local i=0 s
  for s in "${steps[@]}"; do
    i=$((i + 1))
    [ "$s" = "$1" ] && break
  done
  step_done
  current_step=$1
  if [ "$dry_run" = 0 ]; then step_line=$(($(wc -l <"$log") + 1)); fi
  say "==> [$i/${#steps[@]}] $1"
}

versions=""
for comp in "${components[@]}"; do
  tag_var="TORCHENV_${comp^^}_TAG"
  versions+="${versions:+, }$comp ${!tag_var}"
done
if [ "$dry_run" = 1 ]; then
  say "build.sh: dry run: the commands and variables a build would use here, in order; nothing runs."
else
  say "build.sh: building $versions (CUDA $TORCHENV_CUDA; spec hash $TORCHENV_SPEC_HASH)"
  say "build.sh: the whole log: $log"
fi
say "# settings: $TORCHENV_SPEC_PATH (spec hash $TORCHENV_SPEC_HASH): $versions, CUDA $TORCHENV_CUDA"
say "# work folder: $work"

# ---------------------------------------------------------------------------------------------
# 1. get-source: a clone at the tag (or a reused one), or a checkout given with --src.

declare -A srcdir=()

verify_tag() {  # verify_tag DIR TAG: refuse a checkout that is not at the tag
  local dir=$1 tag=$2 want have
  want=$(git -C "$dir" rev-parse --verify --quiet "refs/tags/$tag^{commit}") \
    || die "$dir has no tag $tag." "fetch it (git -C $dir fetch origin tag $tag --depth 1) or point at a checkout of $tag"
  have=$(git -C "$dir" rev-parse HEAD)
  if [ "$want" != "$have" ]; then
    die "$dir is at $(git -C "$dir" describe --tags --always HEAD), not at the spec's tag $tag." \
      "check out the tag (git -C $dir checkout $tag), or remove $dir to clone it again"
  fi
}

get_source() {
  local comp override key repo_var tag_var url tag dest
  for comp in "${components[@]}"; do
    key=${comp^^}
    repo_var="TORCHENV_${key}_REPO"
    tag_var="TORCHENV_${key}_TAG"
    url=${!repo_var}
    tag=${!tag_var}
    override=""
    [ "$comp" = torch ] && override=$src
    [ "$comp" = torchvision ] && override=$vision_src
    dest=$work/src/$comp
    if [ -n "$override" ]; then
      [ -d "$override" ] || die "--src $override for $comp is not a folder." "pass a checkout of $tag or a mirror of $url"
      override=$(cd "$override" && pwd)
      if [ "$(git -C "$override" rev-parse --is-bare-repository 2>/dev/null || echo none)" = false ]; then
        say "# $comp: the checkout $override, built in place"
        verify_tag "$override" "$tag"
        [ -z "$(git -C "$override" status --porcelain --untracked-files=no)" ] \
          || say "# warning: $override has uncommitted changes; they go into the build"
        dest=$override
        srcdir[$comp]=$dest
        submodules "$dest" present
        continue
      fi
      git -C "$override" rev-parse --git-dir >/dev/null 2>&1 \
        || die "--src $override for $comp is neither a git checkout nor a mirror." "pass a git checkout or a bare mirror"
      url="file://$override"
      say "# $comp: from the mirror $override"
    fi
    if [ -d "$dest/.git" ]; then
      say "# $comp: reusing the checkout $dest"
      verify_tag "$dest" "$tag"
      submodules "$dest" present
    else
      if [ -e "$dest" ]; then run rm -rf "$dest"; fi
      run git -c advice.detachedHead=false clone --branch "$tag" --depth 1 "$url" "$dest"
      submodules "$dest" new
    fi
    srcdir[$comp]=$dest
  done
}

submodules() {  # submodules DIR present|new
  if [ "$dry_run" = 1 ] && [ "$2" = new ]; then
    say "+ $(q git -C "$1" submodule update --init --recursive --depth 1)  # if it has submodules"
  elif [ -f "$1/.gitmodules" ]; then
    run git -C "$1" submodule update --init --recursive --depth 1
  fi
}

# ---------------------------------------------------------------------------------------------
# 2. configure: the build environment from the spec; the toolchain must be able to build it.

configure() {
  local name inherited=()
  for name in "${build_env[@]}"; do
    export "${name?}"
    say "export $name=$(q "${!name}")"
  done
  for name in $(compgen -e); do
    case $name in
      USE_* | BUILD_* | TORCH_* | CMAKE_* | MAX_JOBS | CC | CXX | CFLAGS | CXXFLAGS | LDFLAGS | NVCC_* | CUDA_HOME | CUDACXX)
        [[ " ${build_env[*]} " == *" $name "* ]] || inherited+=("$name=$(q "${!name}")")
        ;;
    esac
  done
  if [ "${#inherited[@]}" -gt 0 ]; then
    say "# also in the environment (not from the spec; the build sees them): ${inherited[*]}"
  fi
  command -v "$python" >/dev/null 2>&1 || [ "$dry_run" = 1 ] \
    || die "the interpreter '$python' is not on PATH." "install Python $TORCHENV_PYTHON or pass --python EXE"
  command -v "${CXX:-c++}" >/dev/null 2>&1 || [ "$dry_run" = 1 ] \
    || die "no C++ compiler (${CXX:-c++}) on PATH." "install one (apt-get install g++) or set CXX"
  if [ "$TORCHENV_CUDA" != none ]; then
    export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
    say "export CUDA_HOME=$(q "$CUDA_HOME")"
    check_cuda_toolchain "$CUDA_HOME/bin/nvcc"
  fi
  if [ "$use_ccache" = 1 ] && command -v ccache >/dev/null 2>&1; then
    export CCACHE_DIR=$ccache_dir
    say "export CCACHE_DIR=$(q "$CCACHE_DIR")"
    # CMake projects (PyTorch) take the launcher; torch.utils.cpp_extension builds (torchvision)
    # put ccache in front of the compiler themselves when it is on PATH.
    export CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache
    say "export CMAKE_C_COMPILER_LAUNCHER=ccache"
    say "export CMAKE_CXX_COMPILER_LAUNCHER=ccache"
    if [ "$TORCHENV_CUDA" != none ]; then
      export CMAKE_CUDA_COMPILER_LAUNCHER=ccache
      say "export CMAKE_CUDA_COMPILER_LAUNCHER=ccache"
    fi
    run ccache --zero-stats
  elif [ "$use_ccache" = 0 ]; then
    export TORCH_NO_COMPILER_WRAPPER=1  # keep torch.utils.cpp_extension from using ccache on its own
    say "# ccache: not used (--no-ccache)"
    say "export TORCH_NO_COMPILER_WRAPPER=1"
  else
    say "# ccache: not on PATH; nothing is cached between runs (apt-get install ccache)"
  fi
}

check_cuda_toolchain() {  # the toolkit is the spec's CUDA and lists every arch the build targets
  local nvcc=$1 release listed arch missing=()
  if [ "$dry_run" = 1 ]; then
    say "+ $(q "$nvcc" --version)  # must report release $TORCHENV_CUDA"
    say "+ $(q "$nvcc" --list-gpu-arch)  # must list $TORCHENV_NVCC_ARCHS"
    return 0
  fi
  [ -x "$nvcc" ] || die "USE_CUDA=1 but there is no nvcc at $nvcc (PyTorch would quietly build without CUDA)." \
    "install the CUDA $TORCHENV_CUDA toolkit, or set CUDA_HOME to it"
  say "+ $(q "$nvcc" --version)"
  release=$("$nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)
  [ "$release" = "$TORCHENV_CUDA" ] || die "$nvcc is CUDA ${release:-unknown}; the spec builds with CUDA $TORCHENV_CUDA." \
    "set CUDA_HOME to a CUDA $TORCHENV_CUDA toolkit, or change build.cuda in the spec"
  say "+ $(q "$nvcc" --list-gpu-arch)"
  listed=" $("$nvcc" --list-gpu-arch | tr '\n' ' ') "
  for arch in $TORCHENV_NVCC_ARCHS; do
    [[ $listed == *" $arch "* ]] || missing+=("$arch")
  done
  [ "${#missing[@]}" -eq 0 ] || die "CUDA $release ($nvcc) cannot target ${missing[*]}, which TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST asks for." \
    "drop those architectures from torch_cuda_arch_list and build.arch_list in the spec"
}

# ---------------------------------------------------------------------------------------------
# 3. build-wheels: in a build venv kept between runs (CMake's cache and ccache stay valid),
#    without build isolation so torchvision builds against the torch just built.

build_wheels() {
  local comp dir out reqs wheel i=0 built=()
  if [ -x "$build_venv/bin/python" ]; then
    say "# reusing the build venv $build_venv"
  else
    run "$python" -m venv "${venv_flags[@]}" "$build_venv"
  fi
  local bpy=$build_venv/bin/python
  for comp in "${components[@]}"; do
    i=$((i + 1))
    dir=${srcdir[$comp]}
    reqs=$work/build-requirements/$comp.txt
    [ "$dry_run" = 1 ] || mkdir -p "$(dirname "$reqs")"
    run_to "$reqs" "$bpy" "$here/build_requires.py" "$dir"
    if [ "$dry_run" = 1 ]; then
      say "+ $(q "$bpy" -m pip install --no-compile -r "$reqs")  # if it lists anything"
    elif [ -s "$reqs" ]; then
      run "$bpy" -m pip install --no-compile -r "$reqs"
    else
      say "# $comp: the build venv has every build requirement"
    fi
    out=$wheels/$comp
    run rm -rf "$out"
    run "$bpy" -m pip wheel --verbose --no-build-isolation --no-deps --wheel-dir "$out" "$dir"
    if [ "$dry_run" = 1 ]; then
      wheel="$out/*.whl"
    else
      wheel=$(one_wheel "$out" "$comp")
    fi
    built+=("$wheel")
    if [ "$i" -lt "${#components[@]}" ]; then
      run "$bpy" -m pip install --no-compile "${built[-1]}"
    fi
  done
  if [ "$use_ccache" = 1 ] && command -v ccache >/dev/null 2>&1; then
    run ccache --show-stats
  fi
  wheel_files=("${built[@]}")
}

one_wheel() {  # the single wheel pip wrote for a component
  local found=("$1"/*.whl)
  if [ "${#found[@]}" -ne 1 ] || [ ! -f "${found[0]}" ]; then
    echo "build.sh: expected one wheel for $2 in $1, found: ${found[*]}" >&2
    return 1
  fi
  printf '%s\n' "${found[0]}"
}

# ---------------------------------------------------------------------------------------------
# 4. install: a fresh venv (replaced every run) with the wheels, the spec's packages and torchenv.

install_wheels() {
  local tpkg=$torchenv_pkg
  if [ -d "$tpkg" ] && [ ! -f "$tpkg/pyproject.toml" ]; then
    if [ "$dry_run" = 1 ]; then
      tpkg="$tpkg/torchenv-*.whl"
    else
      tpkg=$(one_wheel "$tpkg" torchenv)
    fi
  fi
  run rm -rf "$venv"
  run "$python" -m venv "${venv_flags[@]}" "$venv"
  run "$venv/bin/python" -m pip install "${wheel_files[@]}" "${packages[@]}"
  run "$venv/bin/python" -m pip install --no-deps "$tpkg"
}

# ---------------------------------------------------------------------------------------------
# 5. check: the smoke suite inside the new venv, against the spec.

check() {
  [ "$dry_run" = 1 ] || mkdir -p "$reports"
  run "$venv/bin/torchenv" check --variant source --spec "$spec" \
    --json "$reports/source.json" --junit "$reports/source.junit.xml" "${check_only[@]}"
}

wheel_files=()
step get-source
get_source
step configure
configure
step build-wheels
build_wheels
step install
install_wheels
if [ "$do_check" = 1 ]; then
  step check
  check
fi
step_done
current_step=""
if [ "$dry_run" = 1 ]; then
  say "build.sh: dry run done: nothing was run."
else
  say "build.sh: done: $venv holds ${versions}$([ "$do_check" = 1 ] && echo ", checked (report: $reports/source.json)")"
fi
