"""Render report.html with headless Chromium (Debian's `chromium` package) to a PNG.

    python scripts/screenshot_report.py REPORT.html OUT.png [--width 1400] [--height 2200]

Used for the README's picture of `python -m interp.classify_heads`. Chromium runs offline:
the report embeds plotly.js and circuitsvis, so nothing is fetched.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report")
    p.add_argument("out")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=2200)
    a = p.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("error: chromium not found; install Debian's chromium package "
              "(apt-get install chromium)", file=sys.stderr)
        return 2
    report = Path(a.report).resolve()
    if not report.is_file():
        print(f"error: {a.report} is not a file; give a report.html from classify_heads",
              file=sys.stderr)
        return 2
    out = Path(a.out).resolve()
    with tempfile.TemporaryDirectory() as profile:
        tmp = out.with_name(f".{out.name}.tmp.png")
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--disable-background-networking", "--disable-dev-shm-usage", "--no-first-run",
               "--mute-audio",
               f"--user-data-dir={profile}", f"--window-size={a.width},{a.height}",
               f"--screenshot={tmp}", report.as_uri()]
        # (--virtual-time-budget hangs on this page: the shot is taken at the load event,
        # after the inline scripts have drawn every figure)
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        except subprocess.TimeoutExpired:
            print("error: chromium did not finish in 300 s", file=sys.stderr)
            return 2
        tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
