"""``python -m takod``: the takod CLI."""

from .cli import main

raise SystemExit(main())
