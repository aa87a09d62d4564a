"""Headless Chromium for tests that check what a page shows (a helper module: no tests here).

    html = dump_dom("file:///tmp/page.html?layer=1&head=2")      # the DOM after the page's scripts ran
    with Chromium() as browser:                                  # driven over the DevTools protocol
        browser.open(Path("page.html"))
        browser.eval("document.title")                           # any JS expression, value returned

It uses the Debian packages ``chromium`` (``/usr/bin/chromium``) and, for other drivers,
``chromium-driver``; no Python package downloads a browser. The DevTools client is a few lines over
``websocket-client`` (the `dev` extra). Every launch gets a fresh profile directory, the flags that
keep Chromium off the network (without them it stalls on a machine with none), and time limits;
the browser's process group is ended in a ``finally``. A missing browser raises
`ChromiumMissing`, so a test that needs one fails, saying how to install it, instead of skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
INSTALL = ("Headless Chromium is needed for the browser tests and is not installed: run "
           "`apt-get update && apt-get install -y chromium chromium-driver` as root (`make test` installs "
           "them when /usr/bin/chromium is missing).")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--disable-extensions", "--disable-default-apps",
         "--no-default-browser-check", "--mute-audio", "--hide-scrollbars"]


class ChromiumMissing(RuntimeError):
    """No Chromium binary: the message says how to install it."""


def chromium_path() -> str:
    """The Chromium binary, or `ChromiumMissing` naming the apt packages."""
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if not path:
        raise ChromiumMissing(INSTALL)
    return path


def _stop(proc: subprocess.Popen) -> None:
    """End the browser we started: its own process group (the launcher, the browser and its children)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
    else:  # the launcher has exited; children left in its group are ours too
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def dump_dom(url: str, timeout: float = 60, budget_ms: int = 2000) -> str:
    """The page's DOM (``--dump-dom``) after its scripts ran and ``budget_ms`` of virtual time passed."""
    binary = chromium_path()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                             "--dump-dom", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"chromium --dump-dom {url} took more than {timeout} s") from None
    finally:
        _stop(proc)
        shutil.rmtree(profile, ignore_errors=True)
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"chromium --dump-dom {url} failed (exit {proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return out.decode("utf-8")


class Chromium:
    """Headless Chromium driven over the DevTools protocol, one page; a context manager.

        with Chromium() as browser:
            browser.open(path_or_url)
            browser.eval("document.querySelector('select').value = '1'")
    """

    def __init__(self, timeout: float = 30):
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.workdir: str | None = None
        self.profile: str | None = None
        self.ws = None
        self._id = 0

    def __enter__(self) -> Chromium:
        import websocket  # websocket-client, in the dev extra

        binary = chromium_path()
        self.workdir = tempfile.mkdtemp(prefix="chromium-")
        self.profile = os.path.join(self.workdir, "profile")
        try:
            with open(os.path.join(self.workdir, "stderr.log"), "wb") as log:  # a pipe nobody reads could fill up
                self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile}",
                                              "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                                              "about:blank"],
                                             stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
            port = self._port()
            no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            deadline = time.monotonic() + self.timeout
            while True:  # the first page target can appear a moment after the port
                with no_proxy.open(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as response:
                    pages = [t for t in json.load(response) if t.get("type") == "page"]
                if pages or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            if not pages:
                raise RuntimeError("Chromium started but offers no page to drive.")
            self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=self.timeout,
                                                  suppress_origin=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _port(self) -> int:
        marker = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = Path(self.workdir) / "stderr.log"
                raise RuntimeError(f"Chromium exited (code {self.proc.returncode}): "
                                   f"{log.read_text(errors='replace')[-2000:]}")
            if marker.exists():
                lines = marker.read_text().split()
                if lines:
                    return int(lines[0])
            time.sleep(0.05)
        raise TimeoutError(f"Chromium did not open its DevTools port within {self.timeout} s.")

    def __exit__(self, *exc) -> None:
        try:
            if self.ws is not None:
                self.ws.close()
        finally:
            self.ws = None
            if self.proc is not None:
                _stop(self.proc)
                self.proc = None
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = self.profile = None

    def send(self, method: str, **params) -> dict:
        """One DevTools command; its ``result`` (events arriving meanwhile are dropped)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return message.get("result", {})
        raise TimeoutError(f"No answer to {method} within {self.timeout} s.")

    def eval(self, expression: str):
        """Evaluate JavaScript in the page (promises awaited) and return its value as JSON data."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"JavaScript error: {details.get('exception', {}).get('description') or details}")
        return result["result"].get("value")

    def open(self, page: str | Path) -> None:
        """Load a file (path) or URL and wait until the document has loaded."""
        url = Path(page).resolve().as_uri() if isinstance(page, Path) else page
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.eval(f"document.readyState === 'complete' && location.href.startsWith({json.dumps(url.split('?')[0].split('#')[0])})"):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{url} did not load within {self.timeout} s.")
