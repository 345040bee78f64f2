# shellcheck shell=bash
# Sourced by scripts/demo and scripts/test: a project-local virtual environment in .venv.
#
# Debian 12 and Ubuntu 24.04 mark their Python "externally managed" (PEP 668): pip refuses to
# install into it, and `python3 -m venv` needs the python3-venv package. So regstore never
# installs into the system or user site; everything goes into .venv at the repository root,
# created on first use and reused afterwards (an install runs again only when pyproject.toml or
# the constraints file changed). Versions come from constraints.txt (regenerate: scripts/lock).
#
# Environment: PYTHON, the interpreter that creates the venv (default: python3 on PATH).

REGSTORE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV="$REGSTORE_ROOT/.venv"
VENV_PYTHON="$VENV/bin/python"

_venv_say() { printf '== %s\n' "$*" >&2; }

_as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; return; fi
    if command -v sudo >/dev/null 2>&1; then sudo "$@"; return; fi
    _venv_say "need root for: $* (run as root, or install sudo)"
    return 1
}

# apt_install PKG...: Debian packages, quietly, as root or through sudo.
apt_install() {
    _venv_say "installing Debian packages: $*"
    _as_root apt-get update -qq
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

_create_venv() {
    local python=${PYTHON:-python3}
    if ! command -v "$python" >/dev/null 2>&1; then
        _venv_say "no $python on PATH: install Python 3.10 or newer (Debian: apt-get install python3)"
        return 1
    fi
    # Debian splits venv and ensurepip out of the interpreter; both are needed for `-m venv`.
    if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        local version
        version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        apt_install python3-venv "python$version-venv"
    fi
    _venv_say "creating the virtual environment $VENV (with $(command -v "$python"))"
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
    "$VENV_PYTHON" -m pip install -q --disable-pip-version-check --upgrade pip
}

# ensure_venv SPEC...: .venv exists and holds the given pip requirement specs (paths relative
# to the repository root), installed against constraints.txt; `pip check` must pass.
ensure_venv() {
    # A venv whose interpreter is gone (Python upgraded) or that was made in another place (a
    # moved clone: its scripts' #! lines name the old path) is rebuilt from scratch.
    if ! "$VENV_PYTHON" -c 'import sys' >/dev/null 2>&1 \
        || [ "$(cat "$VENV/.regstore-root" 2>/dev/null)" != "$REGSTORE_ROOT" ]; then
        _create_venv
        printf '%s' "$REGSTORE_ROOT" >"$VENV/.regstore-root"
    fi
    local stamp_file="$VENV/.regstore-installed" stamp
    stamp=$(cd "$REGSTORE_ROOT" && cat pyproject.toml plugins/*/pyproject.toml constraints.txt \
        | "$VENV_PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
    stamp="$stamp $*"
    if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]; then
        _venv_say "installing into .venv: $*"
        local args=() spec
        for spec in "$@"; do args+=(-e "$spec"); done
        (cd "$REGSTORE_ROOT" && "$VENV_PYTHON" -m pip install -q --disable-pip-version-check \
            -c constraints.txt "${args[@]}")
        printf '%s' "$stamp" >"$stamp_file"
    fi
    # A broken set of dependencies fails here, not later as an untested combination.
    "$VENV_PYTHON" -m pip check >/dev/null || {
        "$VENV_PYTHON" -m pip check >&2
        _venv_say "pip check failed in $VENV (regenerate the constraints with scripts/lock)"
        return 1
    }
    export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH"
}
