"""``python -m fastmetrics``."""

from .cli import main

raise SystemExit(main())
