"""``doctor --fix``: the repairs that are safe to make without asking.

- modes of the directories and files takod owns (never someone else's, never
  through a symlink; :func:`takod.doctor_local.chmod_own`, which the CLI also
  uses when the daemon is down);
- the workspace pi runtime: ``npm install`` of the pinned pi package into
  ``<ws>/.tako/pi/node`` with npm's cache in ``<ws>/.tako/npm-cache``, as
  Takobot's bootstrap does (research takobot-inference.md §10), output streamed
  as progress;
- a missing workspace pi ``auth.json``: seeded from the home pi file when one
  holds credentials (what Takobot does), else ``{}`` with mode 0600 (what pi
  itself writes), under pi's lock, never over an existing file.

Blocking helpers run in worker threads; the npm install is an async subprocess
that a cancelled request kills, with its whole process group.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import anyio
from anyio.streams.text import TextReceiveStream

from takod.doctor_local import chmod_own

from .credentials import pi_auth
from .credentials.files import FileProblem, atomic_write, check_dirs, read_bytes, write_target
from .credentials.pi_lock import pi_lock
from .inference.subprocess_run import prepend_path, stop_group
from .providers.detect import read_manifest, workspace_pi_path
from .redact import redact_text

# The pi Takobot workspaces get: the version research/ was checked against
# (scripts/install-test-tools.sh pins the same). TAKOD_PI_PACKAGE overrides it
# (any npm spec: a version, a tarball, a file: path).
PI_PACKAGE = "@mariozechner/pi-coding-agent@0.73.1"
PI_PACKAGE_ENV = "TAKOD_PI_PACKAGE"
NPM_TIMEOUT_S = 600.0  # Takobot's npm install timeout
LOCK_TIMEOUT_S = 2.0

Progress = Callable[[str], Awaitable[None]]


def pi_package(env: Mapping[str, str]) -> str:
    return env.get(PI_PACKAGE_ENV) or PI_PACKAGE


def runtime_dir(workspace: Path) -> Path:
    return workspace / ".tako" / "pi" / "node"


def ensure_workspace_auth(workspace: Path, env: Mapping[str, str], home: Path) -> str:
    """Create the workspace pi ``auth.json`` if it is missing; make it 0600."""
    target = pi_auth.workspace_auth_path(workspace)
    check_dirs(workspace, target)
    seeded = pi_auth.seed_workspace_auth(target, pi_auth.home_auth_paths(env, home), lock_timeout=LOCK_TIMEOUT_S)
    if seeded.outcome == "seeded":
        return f"seeded {target} from {seeded.source}"
    if seeded.outcome == "no_home_auth":
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with pi_lock(target, timeout=LOCK_TIMEOUT_S) as held:
            if read_bytes(target) is None:  # pi or a login may have written it meanwhile
                held.ensure_held()
                atomic_write(target, b"{}", 0o600, kind=pi_auth.PI_AUTH_KIND)
                return f"created {target} ({{}}, mode 0600)"
    # Through a link only to the user's own pi auth.json (never chmod a planted link's target).
    return chmod_own(str(write_target(target, pi_auth.PI_AUTH_KIND)), 0o600)


async def install_pi_runtime(
    workspace: Path, spec: str, npm: str, env: Mapping[str, str], progress: Progress
) -> str:
    """``npm install SPEC`` into the workspace runtime; returns what was installed.
    Raises ``RuntimeError`` with npm's last words when it fails or times out."""
    prefix = runtime_dir(workspace)
    cache = workspace / ".tako" / "npm-cache"
    tmp = workspace / ".tako" / "tmp"
    for directory in (prefix, cache, tmp):
        try:
            check_dirs(workspace, directory / "x")  # npm must install here, not where a planted link points
        except FileProblem as exc:
            raise RuntimeError(f"not installing into {directory}: it {exc.detail}") from None
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    child_env = prepend_path(env, os.path.dirname(npm))  # the node that goes with this npm
    child_env.update(
        npm_config_cache=str(cache), npm_config_update_notifier="false", npm_config_fund="false",
        npm_config_audit="false", TMPDIR=str(tmp),
    )
    argv = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=warn", spec]
    await progress(f"npm install {spec} into {prefix} (up to {NPM_TIMEOUT_S:g} s)")
    tail: list[str] = []
    finished = False
    process = await anyio.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=child_env, cwd=str(prefix), start_new_session=True,
    )
    try:
        with anyio.move_on_after(NPM_TIMEOUT_S):
            assert process.stdout is not None
            pending = ""
            async for chunk in TextReceiveStream(process.stdout, errors="replace"):
                *lines, pending = (pending + chunk).split("\n")
                for line in lines:
                    line = redact_text(line.rstrip())
                    if line:
                        tail = (tail + [line])[-5:]
                        await progress(f"npm: {line[:300]}")
            await process.wait()
            finished = True
    finally:
        with anyio.CancelScope(shield=True):
            await stop_group(process)
    if not finished:
        raise RuntimeError(f"npm install did not finish within {NPM_TIMEOUT_S:g} s")
    if process.returncode != 0:
        raise RuntimeError(f"npm install exited {process.returncode}: {' | '.join(tail) or 'no output'}")
    binary = workspace_pi_path(workspace)
    if not binary.exists():
        raise RuntimeError(f"npm install finished but {binary} is missing")
    manifest = read_manifest(binary)
    version = manifest.version if manifest is not None else "?"
    return f"installed pi {version} at {binary}"
