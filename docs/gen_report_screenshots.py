"""Draw the two report screenshots of docs/stages/report.md from a demo's report, in headless Chromium.

    reshape demo --out /tmp/demo && python docs/gen_report_screenshots.py /tmp/demo/dataset

Needs Playwright for Python (test extra) and Debian's chromium at /usr/bin/chromium. Writes
docs/images/report_selection.png and docs/images/report_provenance.png (palette PNGs, kept small).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip
OUT = Path(__file__).parent / "images"


def _save(png: bytes, name: str) -> None:
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128, dither=Image.Dither.NONE)
    image.save(OUT / name, optimize=True)


def main(dataset: Path) -> None:
    index = (dataset / "report" / "index.html").resolve()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 640})
        page.goto(index.as_uri())
        page.click("nav a[data-tab=selection]")
        page.locator("#selection-map .pt.selected").first.click()
        _save(page.screenshot(), "report_selection.png")
        page.click("nav a[data-tab=provenance]")
        page.wait_for_selector("tr.prow")
        page.select_option("#filter-type", page.locator("#filter-type option").nth(2).get_attribute("value"))
        page.wait_for_load_state("networkidle")
        _save(page.screenshot(), "report_provenance.png")
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
