"""The browser tests' one Chromium: Debian's ``chromium`` (or ``$WIREHEAD_CHROMIUM``) driven by Playwright.

The tests fail, never skip, when Playwright or Chromium is missing, naming what to install (``.ci/run``
apt-installs chromium, the ``test`` extra pip-installs Playwright).  Everything a test launches is
closed when it ends, also when it fails; pages are offline unless a test routes them itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM = os.environ.get("WIREHEAD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
LAUNCH_TIMEOUT_MS = 60_000


class Chromium:
    """Launches headless Chromium for one test and closes all it launched (:meth:`close`)."""

    def __init__(self, playwright: Any) -> None:
        self._pw = playwright
        self._opened: list[Any] = []

    def _started(self, launch: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            opened = launch(*args, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                            timeout=LAUNCH_TIMEOUT_MS, **kwargs)
        except Exception as e:  # noqa: BLE001 - whatever Playwright raises becomes one clear failure
            pytest.fail(f"Chromium at {CHROMIUM} could not start (install Debian's chromium, as .ci/run does, or "
                        f"set WIREHEAD_CHROMIUM): {type(e).__name__}: {str(e)[:1500]}")
        self._opened.append(opened)
        return opened

    def browser(self) -> Any:
        """A Playwright ``Browser`` (each ``new_context()`` of it is a fresh, private profile)."""
        return self._started(self._pw.chromium.launch)

    def persistent_context(self, profile: Path, **kwargs: Any) -> Any:
        """A ``BrowserContext`` on the profile folder ``profile`` (``--user-data-dir``); ``kwargs`` as Playwright's."""
        return self._started(self._pw.chromium.launch_persistent_context, str(profile), **kwargs)

    def close(self) -> None:
        for opened in reversed(self._opened):
            with contextlib.suppress(Exception):  # noqa: BLE001 - closing: the test's own failure matters more
                opened.close()
        self._opened.clear()


@pytest.fixture
def chromium() -> Iterator[Chromium]:
    """Headless Chromium for this test (see :class:`Chromium`); closed when the test ends."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.fail(f"the browser test needs Playwright's Python driver ({e}): pip install -e '.[test]'")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install it (apt-get install chromium, as .ci/run does) "
                    "or set WIREHEAD_CHROMIUM to a Chromium executable")
    with sync_playwright() as pw:
        launcher = Chromium(pw)
        try:
            yield launcher
        finally:
            launcher.close()
