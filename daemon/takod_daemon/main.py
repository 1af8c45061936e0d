"""Command line of the daemon process itself (``takod serve`` / ``python -m takod_daemon``)."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from takod import __version__
from takod.paths import ensure_private_dir, socket_path, state_dir

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNSAFE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="takod serve", description="Run the takod daemon in the foreground.")
    p.add_argument("--socket", type=Path, help="socket path (default: $TAKOD_SOCKET or the platform default)")
    p.add_argument("--log", choices=["auto", "console", "json", "journal"], default="auto",
                   help="log output: console on a terminal, journal under systemd, else JSON lines in the state dir")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.add_argument("--refresh-lead", type=float, default=600.0, metavar="SECONDS",
                   help="refresh OAuth tokens this long before their stored expiry (default 600)")
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)  # the autostarting client's ready pipe
    p.add_argument("--version", action="version", version=f"takod {__version__}")
    return p


def _log_mode(choice: str) -> str:
    if choice != "auto":
        return choice
    if os.environ.get("JOURNAL_STREAM"):
        return "journal"
    return "console" if sys.stderr.isatty() else "json"


def _raise_fd_limit() -> None:
    """Every client is a file descriptor: lift the soft limit (often 1024) to the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass


def _no_core_dumps() -> None:
    """Keep tokens and keys out of core files and away from same-user debuggers,
    as ssh-agent and gpg-agent do: no core file (soft and hard limit 0) and, on
    Linux, not dumpable (no core, no ptrace attach, /proc/PID/environ, maps and
    mem readable by root only). ``TAKOD_DUMPABLE=1`` keeps the process dumpable,
    for debugging it with gdb or py-spy."""
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    if sys.platform.startswith("linux") and os.environ.get("TAKOD_DUMPABLE") != "1":
        import ctypes

        PR_SET_DUMPABLE = 4
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def _private_tmpdir(state: Path) -> str | None:
    """Scratch files (prompts for the CLIs) and the CLIs' own temp files go to
    ``$TMPDIR``; when that is not the user's own (trust.py: someone else could
    rename what we make there and read what we write), use ``<state>/tmp``.
    Returns why, or None when ``$TMPDIR`` is fine."""
    import tempfile

    from .trust import check_path

    problem = check_path(tempfile.gettempdir())
    if problem is None:
        return None
    fallback = state / "tmp"
    if ensure_private_dir(fallback) is None:  # the state dir is ours: this fails only on a full disk
        os.environ["TMPDIR"] = str(fallback)
        tempfile.tempdir = str(fallback)
    return f"{problem.path} {problem.why}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ready = os.fdopen(args.ready_fd, "w") if args.ready_fd is not None else None
    from .notify import Notifier

    notifier = Notifier.from_env()  # before anything copies the environment

    def tell(line: str, err: int | None = None) -> None:
        """One line for the client that started us (stderr when run by hand); a
        failure also goes to the service manager as STATUS= and ERRNO=."""
        if ready is not None:
            try:
                ready.write(line + "\n")
                ready.close()
            except OSError:
                pass
        elif not line.startswith("ok"):
            print(f"takod: {line}", file=sys.stderr)
        if err is not None:
            notifier.send(STATUS=f"takod: {line}", ERRNO=str(err))

    _raise_fd_limit()
    _no_core_dumps()
    sock = args.socket or socket_path()
    state = state_dir()
    problem = ensure_private_dir(state, "TAKOD_STATE_DIR")
    if problem is not None:
        tell(f"error: refusing to start: state directory {problem}", errno.EPERM)
        return EXIT_UNSAFE

    from . import logs
    from .credentials.files import FileProblem
    from .daemon import SupervisorConflict, run_daemon
    from .instance import AlreadyRunning, UnsafeDirectory
    from .server import SocketInUse

    try:
        logs.configure(_log_mode(args.log), state, args.log_level)
    except FileProblem as exc:
        tell(f"error: refusing to start: {exc}")
        return EXIT_UNSAFE
    unsafe_tmp = _private_tmpdir(state)
    if unsafe_tmp is not None:
        import structlog

        structlog.get_logger("takod.main").warning("TMPDIR is not yours", problem=unsafe_tmp,
                                                   using=os.environ.get("TMPDIR"))
    try:
        run_daemon(sock, state, on_ready=lambda: tell("ok"), refresh_lead=args.refresh_lead, notifier=notifier)
    except AlreadyRunning as exc:
        tell(f"already running (pid {exc.pid})" if exc.pid else "already running")
        return EXIT_OK
    except UnsafeDirectory as exc:
        tell(f"error: {exc}", errno.EPERM)
        return EXIT_UNSAFE
    except SupervisorConflict as exc:
        tell(f"error: {exc}", errno.EADDRINUSE)
        return EXIT_FAILED
    except (SocketInUse, OSError) as exc:
        tell(f"error: cannot listen on {sock}: {exc}", getattr(exc, "errno", None) or errno.EADDRINUSE)
        return EXIT_FAILED
    except KeyboardInterrupt:
        pass
    finally:
        notifier.close()
    # A keyring call that hangs forever holds a non-daemon worker thread, which
    # would keep the interpreter alive after a clean stop: leave without waiting.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_OK)
