"""Headless Chromium driven over the DevTools protocol on a pipe, with the network blocked.

    with Chromium() as browser:                       # Debian's `chromium`, or CHROMIUM=path
        tab = browser.open(Path("report.html").resolve().as_uri())
        tab.wait_for("document.querySelectorAll('.main-svg').length > 0")
        tab.evaluate("document.title")
        tab.screenshot("report.png")
        tab.requests, tab.console_errors              # what the page asked for, what failed

Used by the browser test (tests/test_browser.py) and scripts/screenshot_report.py. The
standard library is enough: Chromium reads commands on file descriptor 3 and answers on 4
(`--remote-debugging-pipe`), one JSON message per NUL-terminated line, so no client package,
no port and no socket are involved. Every request the page makes is paused (Fetch domain):
`file:` and `data:` ones go on, any other is failed and recorded, and Chromium itself is
started with a proxy that leads nowhere and a resolver that resolves nothing.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

ALLOWED_SCHEMES = ("file:", "data:", "about:")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
         "--disable-default-apps", "--no-default-browser-check", "--metrics-recording-only",
         "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--remote-debugging-pipe"]


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or did not answer in time."""


# true once every circuitsvis view and every plotly figure on an interp page has been drawn,
# the page's queue of drawing (interp.viz.page's PAGE_JS: views, their charts) is empty, and
# every chart of a drawn view is built (a view's builds are queued a task after it is drawn)
DRAWN = ("[...document.querySelectorAll('div.cv')].every(d => d.childElementCount > 0) && "
         "[...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector("
         "'.main-svg')) && (typeof interpQueue === 'undefined' || "
         "(interpQueue.length === 0 && !interpBusy)) && [...document.querySelectorAll("
         "'canvas[data-interp-chart]')].every(c => c.dataset.interpBuilt)")


def find_chromium() -> str | None:
    """The Chromium binary: $CHROMIUM, else `chromium` or `chromium-browser` on the PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One headless Chromium process with a fresh, empty profile (deleted on close)."""

    def __init__(self, binary: str | None = None, width: int = 1400, height: int = 900,
                 timeout: float = 60.0):
        binary = binary or find_chromium()
        if binary is None:
            raise BrowserError("chromium not found; install Debian's chromium package "
                               "(apt-get install chromium) or set CHROMIUM=/path/to/chromium")
        self.width, self.height, self.timeout = width, height, timeout
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-profile-",
                                                    ignore_cleanup_errors=True)
        to_child_r, self._to_child = os.pipe()          # all four close on exec
        self._from_child, from_child_w = os.pipe()
        # copies above 3 and 4, so that placing them on 3 and 4 cannot overwrite each other
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child_r, from_child_w)]
        for fd in (to_child_r, from_child_w):
            os.close(fd)

        def fds():                      # in the child: commands on fd 3, answers on fd 4
            os.dup2(high[0], 3)         # (dup2 leaves 3 and 4 open across exec)
            os.dup2(high[1], 4)

        try:
            self.proc = subprocess.Popen(
                [binary, *FLAGS, f"--user-data-dir={self._profile.name}",
                 f"--window-size={width},{height}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, preexec_fn=fds, close_fds=False,
                start_new_session=True)
        except OSError as e:
            self._profile.cleanup()
            raise BrowserError(f"could not start {binary}: {e.strerror}") from None
        finally:
            for fd in high:
                os.close(fd)
        self._next_id = 0
        self._replies: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()
        self._tabs: dict[str, Tab] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.version = self.call("Browser.getVersion")["product"]

    # -- the pipe ---------------------------------------------------------------------------
    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_child, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                for q in list(self._replies.values()):
                    q.put({"error": {"message": "chromium closed the pipe"}})
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    q = self._replies.get(msg["id"])
                    if q is not None:
                        q.put(msg)
                else:
                    tab = self._tabs.get(msg.get("sessionId"))
                    if tab is not None:
                        tab._event(msg["method"], msg.get("params", {}))

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Send one command and wait for its answer (raises BrowserError on an error)."""
        with self._lock:
            self._next_id += 1
            cid = self._next_id
            q: queue.Queue = queue.Queue()
            self._replies[cid] = q
            msg = {"id": cid, "method": method, "params": params or {}}
            if session:
                msg["sessionId"] = session
            try:
                os.write(self._to_child, json.dumps(msg).encode() + b"\0")
            except OSError as e:
                self._replies.pop(cid, None)
                raise BrowserError(f"chromium is not running ({e.strerror})") from None
        try:
            reply = q.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise BrowserError(f"chromium did not answer {method} in "
                               f"{timeout or self.timeout:.0f} s") from None
        finally:
            self._replies.pop(cid, None)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    # -- tabs -------------------------------------------------------------------------------
    def open(self, url: str, timeout: float | None = None) -> "Tab":
        """A new tab that loads `url` (blocked network, recorded requests and console); returns
        once the load event has fired."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}
                            )["sessionId"]
        tab = Tab(self, target, session)
        self._tabs[session] = tab
        for method, params in [
                ("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}),
                ("Network.enable", {}), ("Page.enable", {}), ("Runtime.enable", {}),
                ("Log.enable", {}),
                ("Emulation.setDeviceMetricsOverride", {"width": self.width,
                                                        "height": self.height,
                                                        "deviceScaleFactor": 1,
                                                        "mobile": False})]:
            tab.call(method, params)
        tab.navigate(url, timeout)
        return tab

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("Browser.close", timeout=5)
            except BrowserError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Tab:
    """One page. requests: every URL it asked for; blocked: those refused (not file:/data:);
    console_errors: console.error/assert calls, uncaught exceptions and error log entries."""

    def __init__(self, browser: Chromium, target: str, session: str):
        self.browser, self.target, self.session = browser, target, session
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.console_errors: list[str] = []
        self._loaded = threading.Event()

    def call(self, method: str, params: dict | None = None, timeout: float | None = None):
        return self.browser.call(method, params, self.session, timeout)

    def _event(self, method: str, p: dict) -> None:
        if method == "Fetch.requestPaused":
            url = p["request"]["url"]
            self.requests.append(url)
            allowed = url.startswith(ALLOWED_SCHEMES)
            if not allowed:
                self.blocked.append(url)
            # answer from another thread: this one is the pipe reader
            threading.Thread(target=self._answer, daemon=True,
                             args=(p["requestId"], allowed)).start()
        elif method == "Network.requestWillBeSent":
            url = p["request"]["url"]
            self.requests.append(url)
            if not url.startswith(ALLOWED_SCHEMES):
                self.blocked.append(url)
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.console_errors.append("console." + p["type"] + ": " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.console_errors.append("exception: " + str(
                d.get("exception", {}).get("description") or d.get("text")))
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            e = p["entry"]
            self.console_errors.append(f"log ({e.get('source')}): {e.get('text')} "
                                       f"{e.get('url', '')}".strip())
        elif method == "Page.loadEventFired":
            self._loaded.set()

    def _answer(self, request_id: str, allowed: bool) -> None:
        try:
            if allowed:
                self.call("Fetch.continueRequest", {"requestId": request_id})
            else:
                self.call("Fetch.failRequest", {"requestId": request_id,
                                                "errorReason": "BlockedByClient"})
        except BrowserError:
            pass

    def navigate(self, url: str, timeout: float | None = None) -> None:
        self._loaded.clear()
        reply = self.call("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise BrowserError(f"could not open {url}: {reply['errorText']}")
        if not self._loaded.wait(timeout or self.browser.timeout):
            raise BrowserError(f"{url} did not finish loading in "
                               f"{timeout or self.browser.timeout:.0f} s")

    def evaluate(self, expression: str, timeout: float | None = None):
        """The value of a JavaScript expression (JSON-serialisable; promises are awaited)."""
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True}, timeout)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise BrowserError("script failed: " + str(
                d.get("exception", {}).get("description") or d.get("text")))
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, every: float = 0.1) -> bool:
        """Poll until the expression is truthy; False if it never was within `timeout`."""
        end = time.monotonic() + timeout
        while True:
            if self.evaluate(expression):
                return True
            if time.monotonic() > end:
                return False
            time.sleep(every)

    def screenshot(self, path: str | os.PathLike, height: int | None = None,
                   y: int = 0) -> Path:
        """A PNG of the page from `y` down: `height` pixels, or to the bottom of the page."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        h = min(size["height"] - y, height) if height else size["height"] - y
        shot = self.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": y, "width": max(size["width"], self.browser.width),
                     "height": max(h, 1), "scale": 1}}, timeout=120)
        from interp.io import write_atomic

        return write_atomic(path, base64.b64decode(shot["data"]))
