"""Headless Chromium for the console's browser tests and its README screenshot: Debian's
``chromium`` package (the binary itself, not the /usr/bin wrapper script) driven by
Playwright for Python. Playwright's own browser download does not work here and is not used.
``IDENTITY_CHROMIUM`` names another binary."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

BINARIES = ("/usr/lib/chromium/chromium",)
# No connections of its own (the machine has no network), no GPU, root in a container.
ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)


def chromium_executable() -> str | None:
    """The Chromium binary to drive, or None when there is none."""
    for candidate in (os.environ.get("IDENTITY_CHROMIUM"), *BINARIES):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if chromium_executable() is None:
        return "no Chromium: apt-get install -y chromium (or set IDENTITY_CHROMIUM)"
    return None


@asynccontextmanager
async def chromium() -> AsyncIterator[object]:
    """A headless Chromium (playwright.async_api.Browser)."""
    from playwright.async_api import async_playwright

    executable = chromium_executable()
    assert executable is not None, missing()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=list(ARGS))
        try:
            yield browser
        finally:
            await browser.close()
