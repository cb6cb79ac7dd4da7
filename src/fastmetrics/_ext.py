"""Whether the compiled core is used (``FASTMETRICS_NO_EXTENSIONS=1`` turns it off)."""

from __future__ import annotations

import os

NO_EXTENSIONS: bool = os.environ.get("FASTMETRICS_NO_EXTENSIONS", "") not in ("", "0")
