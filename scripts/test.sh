#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it.
#   scripts/test.sh            # the whole suite
#   scripts/test.sh -k wire    # extra arguments go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# 1. Debian packages: a stock Neovim, a real Secret Service (gnome-keyring + D-Bus), Node for the CLIs,
#    systemd-analyze to verify the user units, zsh and fish to drive the generated completions.
need_pkgs=()
command -v nvim >/dev/null || need_pkgs+=(neovim)
command -v gnome-keyring-daemon >/dev/null || need_pkgs+=(gnome-keyring)
command -v dbus-daemon >/dev/null || need_pkgs+=(dbus)
command -v dbus-launch >/dev/null || need_pkgs+=(dbus-x11)
command -v secret-tool >/dev/null || need_pkgs+=(libsecret-tools)
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)
command -v node >/dev/null || need_pkgs+=(nodejs npm)
command -v zsh >/dev/null || need_pkgs+=(zsh)
command -v fish >/dev/null || need_pkgs+=(fish)
if ((${#need_pkgs[@]})); then
    echo "==> apt-get install ${need_pkgs[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# 2. Python: a project venv with the exact versions in constraints.txt.
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$PY" -m venv .venv
fi
if ! cmp -s constraints.txt .venv/.constraints 2>/dev/null || ! .venv/bin/python -c "import takod, takod_daemon" 2>/dev/null; then
    echo "==> pip install -e .[test] (constraints.txt)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
    cp constraints.txt .venv/.constraints
fi

# 3. The real provider CLIs (pi, codex, claude, gemini) from npm, pinned.
bash scripts/install-test-tools.sh

# 4. The suite. Exit code 5 (no tests collected) is a failure here, as it should be.
echo "==> pytest"
# The CLI tests run the installed `takod` console script, as users do: this venv's comes first.
export PATH="$ROOT/.venv/bin:$PATH"
exec .venv/bin/python -m pytest "$@"
