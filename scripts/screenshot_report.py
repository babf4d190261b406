"""Render a report.html with headless Chromium (Debian's `chromium` package) to a PNG.

    python scripts/screenshot_report.py REPORT.html OUT.png [--width 1400] [--height 2200]
                                        [--top 0] [--full]

Used for the README's pictures (`docs/report.png`, `docs/induction.png`). Chromium runs with
the network blocked (interp.viz.browser): the report embeds plotly.js and circuitsvis, so
nothing is fetched, and the shot is taken once every figure and circuitsvis view is drawn.
--height pixels from --top down are kept (--full: the whole page). It also says what the page
asked for beyond file: and data: and which console errors it logged; either makes exit 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from interp.viz.browser import DRAWN, BrowserError, Chromium, find_chromium

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report")
    p.add_argument("out")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=2200)
    p.add_argument("--top", type=int, default=0, help="first pixel row kept (default 0)")
    p.add_argument("--full", action="store_true", help="the whole page, however long")
    a = p.parse_args(argv)
    if find_chromium() is None:
        print("error: chromium not found; install Debian's chromium package "
              "(apt-get install chromium) or set CHROMIUM=/path/to/chromium", file=sys.stderr)
        return 2
    report = Path(a.report).resolve()
    if not report.is_file():
        print(f"error: {a.report} is not a file; give a report.html written by one of the "
              "commands", file=sys.stderr)
        return 2
    out = Path(a.out).resolve()
    if not out.parent.is_dir():
        print(f"error: cannot write {a.out}: folder {out.parent} does not exist",
              file=sys.stderr)
        return 2
    if a.width < 200 or a.height < 100 or a.top < 0:
        print("error: --width must be at least 200, --height at least 100 and --top at least 0",
              file=sys.stderr)
        return 2
    try:
        with Chromium(width=a.width, height=min(a.height, 2000), timeout=300) as browser:
            tab = browser.open(report.as_uri(), timeout=300)
            drawn = tab.wait_for(DRAWN, timeout=60)
            time.sleep(0.5)
            tab.screenshot(out, height=None if a.full else a.height, y=a.top)
    except BrowserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    bad = [f"asked for {u}" for u in tab.blocked] + tab.console_errors + \
        ([] if drawn else ["not every figure was drawn within 60 s"])
    for line in bad:
        print(f"warning: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
