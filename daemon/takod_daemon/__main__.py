"""``python -m takod_daemon``: run the daemon in the foreground (what ``takod serve`` does)."""

from .main import main

raise SystemExit(main())
