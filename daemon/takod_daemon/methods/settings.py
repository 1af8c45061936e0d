"""settings.get / settings.set: the workspace's inference-settings.json."""

from __future__ import annotations

import anyio

from takod.protocol import RpcError, invalid
from takod.schema import SETTINGS_FIELDS, SettingsGetParams, SettingsResult, SettingsSetParams

from ..api import registry
from ..credentials.files import FileProblem, check_dirs
from ..credentials.settings import SettingsError, set_field
from ..redact import mask_secret
from ..rpc import Call
from ..state import Workspace
from .core import require_trusted, workspace_of


def settings_result(ws: Workspace) -> SettingsResult:
    s = ws.settings
    return SettingsResult(
        workspace=str(ws.root),
        path=str(ws.settings_file),
        preferred_provider=s.preferred_provider,
        ollama_model=s.ollama_model,
        ollama_host=s.ollama_host,
        type1_model=s.type1_model,
        type2_model=s.type2_model,
        api_keys={name: mask_secret(value) for name, value in sorted(s.api_keys.items())},
        problem=ws.settings_problem,
    )


@registry.method("settings.get", SettingsGetParams)
async def settings_get(call: Call, p: SettingsGetParams) -> SettingsResult:
    ws = await call.daemon.state.workspace(workspace_of(call, p.workspace))
    return settings_result(ws)


@registry.method("settings.set", SettingsSetParams)
async def settings_set(call: Call, p: SettingsSetParams) -> SettingsResult:
    """Change one field; the file is rewritten atomically and keeps every other key."""
    if p.field not in SETTINGS_FIELDS:
        raise invalid("unknown_setting", f"{p.field!r} is not a setting; settings are {', '.join(SETTINGS_FIELDS)}")
    state = call.daemon.state
    ws = await state.workspace(workspace_of(call, p.workspace))
    await require_trusted(call, ws, "write settings")
    async with state.settings_lock:
        def write() -> None:
            check_dirs(ws.root, ws.settings_file)
            set_field(ws.settings_file, p.field, p.value)

        try:
            await anyio.to_thread.run_sync(write)
        except SettingsError as exc:
            raise invalid("invalid_value", str(exc)) from None
        except FileProblem as exc:
            raise invalid("settings_unreadable", f"not overwriting {exc.path}: {exc.detail}; fix or remove it first") from None
        except OSError as exc:  # a full disk, a read-only directory: the old file is still whole
            raise RpcError("settings_write_failed",
                           f"cannot write {ws.settings_file}: {exc.strerror or exc}; the file is unchanged") from None
        await state.settings_changed(ws)
    return settings_result(ws)
