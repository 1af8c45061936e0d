"""The ``takod`` command (``python -m takod`` too): the one-line prompt status from
the daemon's status-line file when it can vouch for it, else the full CLI."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words == ["status", "--short"]:
        from .paths import find_workspace, socket_path
        from .status_line import client_env, read

        line = read(socket_path(), str(find_workspace()), client_env())
        if line is not None:
            print(line)
            return 0
    from .cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
