"""The status-line file a shell prompt reads without asking the daemon
(takod.status_line has the format and the reader, and says why).

Rewritten whole after each evaluation of a workspace and each ``status`` answer
for a client's own keys; removed when the daemon stops. A write is a few hundred
bytes renamed into the socket's private directory, without fsync: the file
describes this run only, and a torn or missing one just sends the prompt to the
daemon.
"""

from __future__ import annotations

import os
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import structlog

from takod import status_line

log = structlog.get_logger("takod.status_file")

MAX_ANSWERS = 32  # key sets remembered: one or two per shell setup; a bound, not a cache size to tune


class StatusFile:
    """What ``status`` selects per workspace, as the file next to ``sock`` shows it."""

    def __init__(self, sock: Path):
        self.path = status_line.path_for(sock)
        self.nonce = secrets.token_hex(8)
        self._workspaces: dict[str, tuple[int, str | None]] = {}
        self._answers: OrderedDict[tuple[str, str], tuple[int, str | None]] = OrderedDict()
        self._failing = False  # said once, not on every evaluation

    def evaluated(self, root: str, evaluations: int, selected: str | None) -> None:
        """Workspace ``root`` was evaluated (its ``evaluations``-th time); answers for
        keys older than that no longer count."""
        self._workspaces[root] = (evaluations, selected)
        self._write()

    def answered(self, root: str, env: Mapping[str, str], evaluations: int, selected: str | None) -> None:
        """``status`` with a client's own keys ``env`` selected ``selected``."""
        key = (root, status_line.key_digest(self.nonce, env))
        if self._answers.get(key) == (evaluations, selected):
            return
        self._answers[key] = (evaluations, selected)
        self._answers.move_to_end(key)
        while len(self._answers) > MAX_ANSWERS:
            self._answers.popitem(last=False)
        self._write()

    def dropped(self, roots: set[str]) -> None:
        """The daemon let these workspaces go: they are not watched, so not vouched for."""
        for root in roots:
            self._workspaces.pop(root, None)
        for key in [k for k in self._answers if k[0] in roots]:
            del self._answers[key]
        self._write()

    def remove(self) -> None:
        """The daemon stops: nothing it wrote may be shown as current."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("status line file not removed", path=str(self.path), error=exc.strerror)

    def _write(self) -> None:
        data = status_line.render(os.getpid(), self.nonce, self._workspaces, self._answers)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:  # the prompt then asks the daemon: slower, never wrong
            if not self._failing:
                log.warning("status line file not written", path=str(self.path), error=exc.strerror)
            self._failing = True
        else:
            self._failing = False
