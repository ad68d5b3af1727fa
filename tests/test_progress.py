"""The shared progress bar: disabled on request, throttled when stderr is not a TTY."""
from __future__ import annotations

import io
import sys

from advgeom.progress import LOG_INTERVAL, progress_bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_disabled_bar_passes_items_through_silently(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert list(progress_bar(3, "x", enabled=False, iterable=iter([1, 2, 3]))) == [1, 2, 3]
    assert err.getvalue() == ""


def test_log_output_is_throttled(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    bar = progress_bar(1000, "train m", unit="step")
    assert bar.mininterval == LOG_INTERVAL
    for _ in range(1000):
        bar.update(1)
    bar.close()
    assert err.getvalue().count("train m") <= 3  # start, maybe one throttled line, close


def test_terminal_bar_redraws_often(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Tty())
    bar = progress_bar(10, "eval", initial=4)
    assert bar.mininterval < 1 and bar.n == 4
    bar.close()
