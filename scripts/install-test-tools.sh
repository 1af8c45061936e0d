#!/usr/bin/env bash
# Install the real provider CLIs the interop tests run, into <repo>/.tools/npm,
# and the real Takobot into <repo>/.tools/takobot (a venv).
#
# Idempotent: when every pinned package is already installed at its pinned
# version (and codex's platform binary runs), nothing is fetched.
# Versions are the ones research/ was checked against (pi 0.73.1 is the last
# @mariozechner release; codex 0.160, claude 2.1.289, gemini 0.58).
set -euo pipefail

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools"
prefix="$tools/npm"
cache="$tools/npm-cache"
# The CLIs write state even for --version (gemini: ~/.gemini); keep it out of the real home.
scratch_home="$tools/home"

pins=(
  "@mariozechner/pi-coding-agent@0.73.1"
  "@openai/codex@0.160.0"
  "@anthropic-ai/claude-code@2.1.289"
  "@google/gemini-cli@0.58.0"
)
bins=(pi codex claude gemini)

say() { printf 'install-test-tools: %s\n' "$*"; }

command -v npm >/dev/null || { say "npm not found on PATH; install Node.js >= 20.6 with npm"; exit 1; }
mkdir -p "$scratch_home"

installed_version() {  # $1 = package name; prints its installed version or nothing
  local manifest="$prefix/node_modules/$1/package.json"
  [ -f "$manifest" ] || return 0
  node -e 'process.stdout.write(String(require(process.argv[1]).version || ""))' "$manifest"
}

all_present() {
  local pin name want
  for pin in "${pins[@]}"; do
    name=${pin%@*}
    want=${pin##*@}
    [ "$(installed_version "$name")" = "$want" ] || return 1
  done
  # codex's launcher is JS; the real program is a platform binary from an optional
  # dependency, so only running it proves the install is whole.
  HOME="$scratch_home" "$prefix/node_modules/.bin/codex" --version >/dev/null 2>&1
}

if all_present; then
  say "pinned CLIs already installed in $prefix; nothing to do"
else
  mkdir -p "$prefix" "$cache"
  say "installing into $prefix: ${pins[*]}"
  # --include=optional: codex and claude ship their binaries as optional dependencies,
  # which a user's `omit=optional` would otherwise drop.
  npm install --prefix "$prefix" --cache "$cache" --no-audit --no-fund \
    --save-exact --include=optional --loglevel=error "${pins[@]}"
fi

status=0
for bin in "${bins[@]}"; do
  path="$prefix/node_modules/.bin/$bin"
  if output=$(HOME="$scratch_home" "$path" --version 2>&1); then
    say "$bin: $(head -n 1 <<<"$output") ($path)"
  else
    say "$bin: FAILED to run --version ($path):"
    printf '%s\n' "$output" >&2
    status=1
  fi
done
# Other tests load the proper-lockfile pi itself resolves, to take pi's lock the way pi does.
pi_dir="$prefix/node_modules/@mariozechner/pi-coding-agent"
if lockfile=$(node -e 'process.stdout.write(require.resolve("proper-lockfile", {paths: [process.argv[1]]}))' "$pi_dir" 2>/dev/null); then
  say "proper-lockfile for pi: $lockfile"
else
  say "proper-lockfile is not resolvable from $pi_dir"
  status=1
fi
# The real Takobot (the program whose workspace files takod serves), in its own throwaway venv,
# for tests/interop/test_takobot.py. Needs Python >= 3.11.
takobot_pin="takobot==0.1.88"
takobot_venv="$tools/takobot"
if [ "$("$takobot_venv/bin/python" -c 'import importlib.metadata as m; print(m.version("takobot"))' 2>/dev/null)" = "${takobot_pin#*==}" ]; then
  say "takobot: ${takobot_pin#*==} already installed ($takobot_venv)"
else
  # The first interpreter that really runs and is new enough (a pyenv shim may exist and refuse to run).
  py=""
  for candidate in python3.12 python3.11 python3; do
    if "$candidate" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
      py=$(command -v "$candidate"); break
    fi
  done
  [ -n "$py" ] || py=python3
  say "installing $takobot_pin into $takobot_venv"
  if ! { "$py" -m venv --clear "$takobot_venv" && "$takobot_venv/bin/python" -m pip install -q "$takobot_pin"; }; then
    say "takobot: FAILED to install $takobot_pin"
    status=1
  fi
fi
exit "$status"
