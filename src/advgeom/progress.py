"""One progress bar for every long loop (training, evaluation, experiments).

On a terminal the bar redraws as usual; when stderr is a file or a pipe (CI logs,
``nohup``), it writes a line at most every ``LOG_INTERVAL`` seconds instead of one
per update, so a log of a long run stays readable.
"""
from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

LOG_INTERVAL = 30.0


def progress_bar(total: int | None = None, desc: str = "", *, enabled: bool = True,
                 initial: int = 0, unit: str = "it", iterable: Any = None) -> tqdm:
    """A tqdm bar (disabled when ``enabled`` is False); throttled when not on a TTY."""
    interactive = bool(getattr(sys.stderr, "isatty", lambda: False)())
    return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit,
                disable=not enabled, leave=False,
                mininterval=0.1 if interactive else LOG_INTERVAL,
                maxinterval=10.0 if interactive else LOG_INTERVAL * 4)
