"""The README's picture of the console, taken with the browser tests' own Chromium
(tests/steward/browser.py):

    python -m tests.steward.screenshot http://127.0.0.1:8080/steward/review/71 \
        docs/img/steward-item.png

The URL is a review item of a running service (the README's was the demo service loaded
with `identity generate --persons 3000 --hard --seed 7` and `identity import`, item 71).
"""

from __future__ import annotations

import argparse
import asyncio

from tests.steward import browser


async def take(url: str, out: str, width: int, height: int) -> None:
    async with browser.chromium() as chrome:
        page = await chrome.new_page(viewport={"width": width, "height": height})  # type: ignore[attr-defined]
        await page.goto(url)
        await page.wait_for_load_state("load")
        await page.screenshot(path=out, full_page=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1080)
    args = parser.parse_args()
    reason = browser.missing()
    if reason:
        raise SystemExit(reason)
    asyncio.run(take(args.url, args.out, args.width, args.height))


if __name__ == "__main__":
    main()
