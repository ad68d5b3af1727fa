"""A headless Chromium for the browser tests (the report site, the documentation site):
found on PATH, skipped without one except under CI, where its absence fails the test."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


def find_browser() -> str:
    """The path of a headless Chromium, or skip (fail under ``CI=true``) naming what is missing."""
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        msg = ("no headless Chromium found (" + ", ".join(BROWSERS) + "); `make test` (target `browser`) "
               "installs Debian's chromium-headless-shell when run as root")
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("browser test must run in CI: " + msg)
        pytest.skip(msg)
    return found


def chromium(browser: str, tmp_path: Path, *args: str) -> str:
    """Run headless ``browser`` with ``args`` (a fresh profile under ``tmp_path``); its stdout."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--allow-file-access-from-files", f"--user-data-dir={tmp_path / 'profile'}", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout
