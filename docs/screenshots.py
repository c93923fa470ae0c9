"""Screenshots of the documentation site, taken with headless Chromium.

    python docs/screenshots.py [--out docs/images] [--notebook NAME] [--anchor ID]

Builds the site (mkdocs.yml, strict) into a temporary directory, executing
one notebook so that its page shows outputs and figures (the others render
as stored, without outputs), serves it on a local port and writes

    site-home.png             the home page
    site-batchnorm-api.png    the BatchNorm API page
    site-notebook.png         the executed notebook's page, at the heading
                              --anchor (the last section of notebook 01, with
                              its training run's output and loss curve)

into ``--out``, each 1280x1600. Needs the docs extra (pip install ".[docs]")
and Chromium (Debian: apt-get install chromium; or name the binary with
$CHROMIUM). The notebook runs with the kernel's working directory in
notebooks/, so a relative TINYNET_DATA_DIR is made absolute first.
"""
from __future__ import annotations

import argparse
import base64
import fcntl
import functools
import http.server
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW = (1280, 1600)
# file name -> page path in the site
PAGES = {"site-home.png": "", "site-batchnorm-api.png": "api/batchnorm/"}
NOTEBOOK_SHOT = "site-notebook.png"
NOTEBOOK = "01-backprop-by-hand"
ANCHOR = "training-it-on-a-few-thousand-images"


def find_chromium() -> str | None:
    """The Chromium binary: $CHROMIUM, else the first of the usual names on PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def build_site(site_dir: str, notebook: str) -> None:
    """mkdocs build --strict of the repository's site into site_dir, executing
    only notebooks/<notebook>.ipynb."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    config = load_config(os.path.join(REPO, "mkdocs.yml"), site_dir=site_dir, strict=True)
    notebooks = os.path.join(REPO, "notebooks")
    if not os.path.isfile(os.path.join(notebooks, notebook + ".ipynb")):
        raise SystemExit(f"screenshots: no notebook notebooks/{notebook}.ipynb")
    others = sorted(f for f in os.listdir(notebooks)
                    if f.endswith(".ipynb") and f != notebook + ".ipynb")
    jupyter = config.plugins["mkdocs-jupyter"].config
    jupyter["execute"] = True
    jupyter["execute_ignore"] = ["*/" + name for name in others]
    config.plugins.on_startup(command="build", dirty=False)
    try:
        build(config)
    finally:
        config.plugins.on_shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class Browser:
    """Headless Chromium driven through the DevTools protocol on a pipe
    (--remote-debugging-pipe: commands go in on the child's fd 3, replies and
    events come out on its fd 4, each a JSON message ended by a NUL byte)."""

    def __init__(self, chromium: str) -> None:
        self._profile = tempfile.TemporaryDirectory()
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # every host but the local server is unreachable: the page must render offline
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--no-first-run", "--no-default-browser-check", "--remote-debugging-pipe",
                 f"--user-data-dir={self._profile.name}",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "about:blank"]
        # a Python trampoline puts the pipe's ends on fds 3 and 4 and execs chromium
        # (the ends are first copied above 9, so that neither is overwritten)
        r, w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome_r, from_chrome_w))
        trampoline = ("import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); "
                      "os.dup2(r, 3); os.dup2(w, 4); os.close(r); os.close(w); "
                      "os.execvp(sys.argv[3], sys.argv[3:])")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", trampoline, str(r), str(w), chromium, *flags],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(r, w))
        os.close(r)
        os.close(w)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._events: list[dict] = []
        self._next_id = 0
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.send("Target.attachToTarget",
                                  {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1,
                   "mobile": False}, session=True)

    def _read(self, timeout: float = 120) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_chrome], [], [], timeout)
            chunk = os.read(self._from_chrome, 1 << 20) if ready else b""
            if not chunk:
                raise SystemExit("screenshots: chromium stopped answering")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise SystemExit(f"screenshots: {method}: {reply['error']}")
                return reply["result"]
            self._events.append(reply)

    def wait_for(self, event: str) -> None:
        while not any(e.get("method") == event for e in self._events):
            self._events.append(self._read())
        self._events.clear()

    def evaluate(self, expression: str) -> object:
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session=True)
        if "exceptionDetails" in result:
            raise SystemExit(f"screenshots: {expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, url: str, path: str, anchor: str = "") -> None:
        """Load url, wait for its fonts, scroll the heading with id ``anchor`` (if
        any) to the top of the window, and write the window to path as PNG."""
        self._events.clear()
        self.send("Page.navigate", {"url": url}, session=True)
        self.wait_for("Page.loadEventFired")
        self.evaluate("document.fonts.ready.then(() => true)")
        if anchor:
            found = self.evaluate(f"""(() => {{
                const heading = document.getElementById({json.dumps(anchor)});
                if (!heading) return false;
                window.scrollTo(0, heading.getBoundingClientRect().top + window.scrollY - 72);
                return true; }})()""")
            if not found:
                raise SystemExit(f"screenshots: {url} has no heading with id {anchor!r}")
        # let the header's title transition (after a scroll) end, then wait for
        # two animation frames, so that the page has been painted
        self.evaluate("new Promise(r => setTimeout(r, 1000))")
        self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        data = self.send("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except SystemExit:
            pass
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        self._profile.cleanup()


def main(argv: list[str] | None = None) -> int:
    from mkdocs.exceptions import Abort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "images"),
                        help="directory for the PNGs (default: docs/images)")
    parser.add_argument("--notebook", default=NOTEBOOK,
                        help="the notebook to execute and screenshot (default: %(default)s)")
    parser.add_argument("--anchor", default=ANCHOR,
                        help="the id of the notebook heading to scroll to; '' for the top "
                             "(default: %(default)s)")
    parser.add_argument("--site-dir", default=None,
                        help="build the site here and keep it (default: a temporary directory)")
    args = parser.parse_args(argv)

    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("screenshots: no Chromium found (apt-get install chromium, "
                         "or set CHROMIUM=/path/to/chrome)")
    if os.environ.get("TINYNET_DATA_DIR"):
        os.environ["TINYNET_DATA_DIR"] = os.path.abspath(os.environ["TINYNET_DATA_DIR"])
    os.makedirs(args.out, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        site = os.path.abspath(args.site_dir or os.path.join(tmp, "site"))
        try:
            build_site(site, args.notebook)
        except Abort as e:
            raise SystemExit(f"screenshots: mkdocs build failed: {e.message}")
        browser = Browser(chromium)
        handler = functools.partial(_QuietHandler, directory=site)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            base = f"http://127.0.0.1:{server.server_address[1]}/"
            shots = [(name, base + page, "") for name, page in PAGES.items()]
            shots.append((NOTEBOOK_SHOT, f"{base}notebooks/{args.notebook}/", args.anchor))
            for name, url, anchor in shots:
                path = os.path.join(os.path.abspath(args.out), name)
                browser.screenshot(url, path, anchor)
                print(f"wrote {path} ({url}{'#' + anchor if anchor else ''})")
        finally:
            browser.close()
            server.shutdown()
            server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
