"""One way to drive a real browser in the tests: Debian's chromium through Playwright for Python.

Never `playwright install`: the browser is the distribution's (`apt-get install chromium`), started
headless with the flags a container needs (no sandbox as root, no GPU, no background traffic).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@contextmanager
def debian_chromium() -> Iterator[Any]:
    """A headless Debian chromium (a Playwright ``Browser``), closed on the way out."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            browser.close()
