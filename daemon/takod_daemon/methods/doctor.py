"""``doctor.run`` (alias ``doctor``): gather the facts, run the checks, and with
``fix`` repair what is safe and check again.

Facts are gathered here, at the edge (files in a worker thread; ``node
--version`` as a subprocess only for a PATH Node whose files do not say); the checks themselves are pure
(:mod:`takod_daemon.doctor`). With ``stream`` the long steps report progress as
``takod.stream`` chunks of kind ``progress`` before the answer.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import structlog

from takod.doctor_local import PROXY_VARS, chmod_own, counts, local_facts, mode_fixes, path_facts
from takod.protocol import STREAM_METHOD
from takod.schema import DoctorCheck, DoctorFix, DoctorParams, DoctorResult

from .. import doctor_fix, node_runtime
from ..api import registry
from ..credentials import codex_auth, pi_auth
from ..credentials.files import FileProblem
from ..credentials.jwt import JwtError, decode_claims
from ..credentials.pi_lock import LockError
from ..doctor import (
    TAKOBOT_HEADER_RE,
    WORKSPACE_REPAIRS,
    DoctorFacts,
    ErrorRecord,
    TokenTime,
    mask_proxy,
    run_checks,
    takobot_error_record,
)
from ..inference.errorlog import error_log_path
from ..links import is_tako_workspace
from ..providers.detect import (
    PI_FALLBACK_NODE_RANGE,
    VersionProbeError,
    find_node,
    in_workspace,
    node_version_from_files,
    read_manifest,
    run_version,
    workspace_pi_path,
)
from ..redact import redact_text
from ..rpc import Call
from ..key_names import CATALOGUE
from ..state import KEY_PROVIDERS, StateManager, Workspace
from .core import workspace_of

log = structlog.get_logger("takod.doctor")

KEY_NAMES = frozenset(k.name for k in CATALOGUE) | KEY_PROVIDERS.keys()  # every name a key can be stored under
ERROR_LOG_TAIL = 256 * 1024  # the tail of the error log that is read (Takobot's records carry 8 KB of output each)


class _ErrorLine(msgspec.Struct):
    ts: float = 0.0
    provider: str = "?"
    kind: str = "?"
    error: str = ""


_error_line = msgspec.json.Decoder(_ErrorLine)


def _read_errors(path: Path) -> list[ErrorRecord]:
    """takod's JSON lines and Takobot's plain-text records, in file order; masked."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - ERROR_LOG_TAIL, 0))
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    if len(lines) > 1 and size > ERROR_LOG_TAIL:
        lines = lines[1:]  # the first line read is most likely cut
    out: list[ErrorRecord] = []
    foreign: list[str] = []

    def flush() -> None:
        record = takobot_error_record(foreign)
        if record is not None:
            out.append(ErrorRecord(record.ts, record.provider, record.kind, redact_text(record.error)))
        foreign.clear()

    for line in lines:
        if line.startswith(b"{"):
            try:
                rec = _error_line.decode(line)
            except msgspec.DecodeError:
                pass  # a torn line: not worth failing the check
            else:
                flush()
                out.append(ErrorRecord(rec.ts, rec.provider, rec.kind, redact_text(rec.error)))  # masked when written; again to be sure
                continue
        text = line.decode("utf-8", "replace")
        if TAKOBOT_HEADER_RE.match(text):
            flush()
        foreign.append(text)
    flush()
    return out


def _token_times(state: StateManager) -> list[TokenTime]:
    """Issue and refresh times of the JWTs takod can see (Codex's, pi's openai-codex)."""
    out: list[TokenTime] = []
    home = codex_auth.codex_home(state.env)
    try:
        codex = codex_auth.read_auth(codex_auth.auth_path(home))
    except FileProblem:
        codex = None
    if codex is not None and (codex.issued_at or codex.last_refresh):
        out.append(TokenTime(codex.path, codex.issued_at, codex.last_refresh))
    for path in state.pi_files():
        try:
            auth = pi_auth.read_auth(path)
        except FileProblem:
            continue
        for provider, entry in (auth.entries if auth else {}).items():
            if isinstance(entry, pi_auth.OAuthEntry):
                try:
                    iat = decode_claims(entry.access).iat
                except JwtError:
                    continue  # Anthropic's and Copilot's tokens are not JWTs
                if iat is not None:
                    out.append(TokenTime(f"{path}#{provider}", iat))
    return out


def _files(call: Call, ws: Workspace) -> dict[str, Any]:
    """Everything that needs the filesystem (blocking: run in a worker thread)."""
    state, d = call.daemon.state, call.daemon
    env = state.env
    root = ws.root
    out: dict[str, Any] = {"local": local_facts(d.socket_path, d.state_dir, env), "tako_workspace": is_tako_workspace(root)}
    auth_file = pi_auth.workspace_auth_path(root)
    out["ws_auth"] = path_facts(os.path.realpath(auth_file))  # dotfile managers link it; pi follows links
    try:
        auth = pi_auth.read_auth(auth_file)
        out["ws_auth_entries"] = len(auth.entries) if auth else 0
    except FileProblem as exc:
        out["ws_auth_problem"] = str(exc)
    for home_file in pi_auth.home_auth_paths(env, state.home):
        try:
            if (found := pi_auth.read_auth(home_file)) is not None and found.entries:
                out["home_auth"] = str(home_file)
                break
        except FileProblem:
            continue
    codex_home = codex_auth.codex_home(env)
    try:
        out["codex_store"] = codex_auth.read_store_mode(codex_home)
    except FileProblem as exc:
        out["codex_problem"] = str(exc)
    out["codex_auth_exists"] = codex_auth.auth_path(codex_home).exists()
    binary = workspace_pi_path(root)
    manifest = read_manifest(binary) if binary.exists() else None
    out["pi_runtime_version"] = (manifest.version or "?") if manifest is not None else None
    pi = ws.pi_binary
    pi_manifest = read_manifest(pi.path) if pi is not None and pi.path else None
    out["node_range"] = (pi_manifest.engines.get("node") if pi_manifest else None) or PI_FALLBACK_NODE_RANGE
    path = env.get("PATH")
    node = out["node_path"] = find_node(workspace=root, path=path)
    npm_near_node = Path(node).with_name("npm") if node else None
    out["npm_path"] = str(npm_near_node) if npm_near_node and os.access(npm_near_node, os.X_OK) else shutil.which("npm", path=path)
    if out["tako_workspace"]:
        try:
            artifact = node_runtime.node_artifact(node_runtime.platform_key())
        except node_runtime.RuntimeUnavailable as exc:
            out["node_unavailable"] = str(exc)
        else:
            if why := node_runtime.refusal(root):
                out["node_unavailable"] = f"takod installs a Node runtime only into a workspace you own: {why}"
            else:
                out["node_installable"] = f"Node {artifact.version} ({artifact.package})"
    log_path = error_log_path(root)
    out["error_log"] = str(log_path)
    try:
        out["errors"] = _read_errors(log_path)
    except OSError as exc:
        out["error_log_problem"] = exc.strerror or type(exc).__name__
    out["tokens"] = _token_times(state)
    return out


def _key_sources(state: StateManager, ws: Workspace, client_names: set[str]) -> dict[str, list[str]]:
    sources: dict[str, list[str]] = {}
    for name in sorted(KEY_NAMES):
        where = []
        if state.env.get(name):
            where.append("daemon-env")
        if name in client_names:
            where.append("client-env")
        info = state.user.stored_keys.get(name)
        if info is not None:
            where.append(info.backend)
        if name in ws.settings.api_keys:
            where.append("settings")
        if where:
            sources[name] = where
    return sources


async def gather(call: Call, ws: Workspace, p: DoctorParams) -> DoctorFacts:
    state, d = call.daemon.state, call.daemon
    env = state.env
    files = await anyio.to_thread.run_sync(_files, call, ws)
    node = files["node_path"]
    node_version = node_version_from_files(node) if node is not None else None
    # Diagnosing reads; it never runs a workspace's program (docs/security.md).
    if node is not None and node_version is None and not in_workspace(node, ws.root):
        try:
            node_version = await run_version(node, env=env, timeout=5)
        except VersionProbeError:
            pass
    pi = ws.pi_binary
    client_names = set(p.env_names or [])
    trust = await state.check_trust(ws)
    return DoctorFacts(
        now=time.time(),
        workspace=str(ws.root),
        providers=ws.providers,
        selected=ws.selected,
        key_store=d.keys.status if d.keys.is_open else None,
        node_version=node_version,
        pi_runtime_path=str(doctor_fix.runtime_dir(ws.root)),
        pi_on_path=pi.path if pi is not None and pi.source == "path" else None,
        pi_package=doctor_fix.pi_package(env),
        codex_installed=bool(state.user.binaries.get("codex") and state.user.binaries["codex"].path),
        key_sources=_key_sources(state, ws, client_names),
        proxies={k: mask_proxy(v) for k, v in env.items() if k.upper() in PROXY_VARS and v},
        client_proxy_names=sorted(n for n in client_names if n.upper() in PROXY_VARS),
        grants=[d.broker.info(g) for g in d.broker.grants.values()],
        untrusted=trust.detail,
        untrusted_hint=trust.hint,
        settings_path=str(ws.settings_file),
        settings_problem=ws.settings_problem,
        **files,
    )


async def _fix(call: Call, ws: Workspace, facts: DoctorFacts, checks: list[DoctorCheck], progress: Any) -> list[DoctorFix]:
    """Repair every fixable check; each repair reports for itself, none stops the others."""
    fixes: list[DoctorFix] = []
    todo = {c.id for c in checks if c.fixable and c.verdict != "ok"}

    async def attempt(check_id: str, work: Any, *args: Any) -> None:
        await progress(check_id, f"fixing {check_id}")
        try:
            message = await work(*args)
        except (OSError, RuntimeError, FileProblem, LockError) as exc:  # every repair failure is reported, none is fatal
            fixes.append(DoctorFix(check_id, False, str(exc)))
            await progress(check_id, f"could not fix {check_id}: {exc}")
            log.warning("doctor fix failed", check=check_id, error=str(exc))
        else:
            fixes.append(DoctorFix(check_id, True, message))
            await progress(check_id, message)
            log.info("doctor fixed", check=check_id, what=message)

    for check_id, path, mode in mode_fixes(facts.local, todo):
        await attempt(check_id, anyio.to_thread.run_sync, chmod_own, path, mode)
    state = call.daemon.state
    if not (await state.check_trust(ws)).trusted:
        todo -= set(WORKSPACE_REPAIRS)  # the checks say so too; checked again here, right before writing
    npm_path = facts.npm_path
    if "node" in todo:
        await attempt("node", node_runtime.install_node, ws.root, state.env, lambda text: progress("node", text))
        installed_npm = node_runtime.install_dir(ws.root) / "bin" / "npm"
        if installed_npm.exists():
            npm_path = str(installed_npm)  # the workspace pi is installed with the workspace Node
    if "pi-runtime" in todo and npm_path:
        await attempt("pi-runtime", doctor_fix.install_pi_runtime, ws.root, facts.pi_package, npm_path,
                      state.env, lambda text: progress("pi-runtime", text))
    if "pi-auth" in todo:
        await attempt("pi-auth", lambda: anyio.to_thread.run_sync(doctor_fix.ensure_workspace_auth, ws.root, state.env, state.home))

    async def reprobe() -> str:
        await state.reload()  # re-detects CLIs (the new pi too), re-reads credentials, re-probes Ollama
        return "re-probed every provider"

    await attempt("probe", reprobe)
    return fixes


async def _reprobe_keyring(call: Call) -> None:
    """Open the key store again, so a keyring that came back (or went away) is
    what the report says; readiness follows when that changed."""
    keys = call.daemon.keys
    if not keys.is_open:
        return  # its first probe is still running; the check says so
    before = keys.status
    await keys.open()
    if keys.status != before:
        await call.daemon.state.keys_changed()


# --fix may download a Node (two tarballs), then npm-install pi.
FIX_TIMEOUT_S = doctor_fix.NPM_TIMEOUT_S + 2 * node_runtime.DOWNLOAD_TIMEOUT_S + 120


@registry.method("doctor", DoctorParams, timeout=FIX_TIMEOUT_S)
@registry.method("doctor.run", DoctorParams, timeout=FIX_TIMEOUT_S)
async def run(call: Call, p: DoctorParams) -> DoctorResult:
    """Every check; with ``fix``, the safe repairs and then every check again."""
    ws = await call.daemon.state.workspace(workspace_of(call, p.workspace))
    seq = 0

    async def progress(step: str, message: str) -> None:
        nonlocal seq
        if p.stream:
            seq += 1
            await call.conn.notify(STREAM_METHOD, [call.msgid, seq, "progress", {"step": step, "message": message}])

    await progress("keyring", "probing the OS keyring")
    await _reprobe_keyring(call)
    await progress("checks", "checking")
    facts = await gather(call, ws, p)
    checks = run_checks(facts)
    fixes: list[DoctorFix] = []
    if p.fix:
        fixes = await _fix(call, ws, facts, checks, progress)
        await progress("checks", "checking again")
        checks = run_checks(await gather(call, ws, p))
    tally = counts(checks)
    return DoctorResult(ok=tally["fail"] == 0, workspace=str(ws.root), daemon=True, checks=checks, fixes=fixes, counts=tally)
