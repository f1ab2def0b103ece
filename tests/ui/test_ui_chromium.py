"""`mvc ui` in headless Chromium: real clicks, rendered curves, live updates.

The test serves a tree of sessions with `mvc ui --port 0`, starts Chromium
headless on loopback with a fresh profile and the flags that keep it off the
network, and drives it over the DevTools protocol: it clicks a session, reads
what the page drew, commits a new epoch from Python and waits for the page to
show it, then compares two sessions. Screenshots are kept in tests/artifacts/.
Without Chromium the test fails and says how to install it.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dashboard_kit as dk
import pytest
from support import assert_clean

from mvcstore import Repo

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
INSTALL = (
    "install Chromium to run the UI test: 'apt-get install -y chromium' on Debian"
    " or Ubuntu (or put a chromium, chromium-browser or google-chrome on PATH)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1280,1100",
]
WAIT_S = 20.0


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(INSTALL, pytrace=False)


def _websocket():
    try:
        import websocket
    except ImportError:
        pytest.fail(
            "the UI test needs websocket-client: '.venv/bin/pip install"
            " websocket-client' (it is in the test extra)",
            pytrace=False,
        )
    return websocket


class DevTools:
    """A minimal DevTools protocol client for one page."""

    def __init__(self, url: str) -> None:
        self.ws = _websocket().create_connection(
            url, timeout=WAIT_S, suppress_origin=True
        )
        self.next_id = 0

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                assert "error" not in message, message
                return message.get("result", {})

    def evaluate(self, expression: str) -> object:
        result = self.call(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression: str) -> object:
        deadline = time.monotonic() + WAIT_S
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.1)

    def click(self, selector: str) -> None:
        """Click the middle of the element as a user would, with the mouse."""
        box = self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'});"
            " const r = e.getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"
        )
        assert isinstance(box, dict)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box["x"],
                y=box["y"],
                button="left",
                clickCount=1,
            )

    def screenshot(self, name: str) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.ws.close()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "repo"
    with Repo.init(root, durable=False) as repo:
        dk.build_tree(repo)
    script = Path(sys.executable).with_name("mvc")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-m", "mvcstore.cli.main"]
    )
    env = {k: v for k, v in os.environ.items() if k != "MVC_DIR"}
    server = subprocess.Popen(
        [*command, "ui", "--port", "0"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:"), line
        yield root, line.split()[1]
    finally:
        _stop(server)
        if server.stdout is not None:
            server.stdout.close()
    with Repo.open(root) as repo:
        assert_clean(repo)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[DevTools]:
    browser = _chromium()
    _websocket()
    profile = tmp_path / "profile"
    profile.mkdir()
    log = (tmp_path / "chromium.log").open("w")
    process = subprocess.Popen(
        [browser, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=log,
        stderr=subprocess.STDOUT,
        # its own temporary folders go with the test's, not into /tmp
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    client: DevTools | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + WAIT_S
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, (tmp_path / "chromium.log").read_text()
            assert time.monotonic() < deadline, "Chromium did not open DevTools"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as answer:
            targets = json.load(answer)
        target = next(t for t in targets if t["type"] == "page")
        client = DevTools(target["webSocketDebuggerUrl"])
        client.call("Page.enable")
        client.call("Runtime.enable")
        yield client
    finally:
        if client is not None:
            client.close()
        _stop(process)
        log.close()


def test_ui_shows_a_session_with_its_inherited_part_live_and_compares(
    served: tuple[Path, str], page: DevTools
) -> None:
    root, url = served

    page.call("Page.navigate", url=url)
    page.wait_for("document.querySelectorAll('#sessions button').length === 4")
    lineage_dots = page.evaluate("document.querySelectorAll('circle.epoch').length")
    page.click('#sessions button[data-session="b"]')
    info = page.wait_for(
        "(() => { const t = document.getElementById('curve-info').textContent;"
        " return t.includes('inherited') ? t : null; })()"
    )
    drawn = page.evaluate(
        "({own: document.getElementById('curve-own').dataset.points,"
        " inherited: document.getElementById('curve-inherited').dataset.points,"
        " fork: document.getElementById('fork-label').textContent,"
        " title: document.getElementById('curve-title').textContent,"
        " metrics: [...document.querySelectorAll('#metric option')].map(o => o.value),"
        " hash: location.hash})"
    )
    shot = page.screenshot("ui-session-b.png")

    assert lineage_dots == 19
    assert info == "80 points of loss (40 inherited, 40 own) over 8 epochs"
    assert drawn == {
        "own": "40",
        "inherited": "40",
        "fork": "fork at a#4",
        "title": "b: loss",
        "metrics": ["acc", "loss", "params"],
        "hash": "#session=b",
    }
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a trainer commits while the page is open: it shows up without a restart
    with Repo.open(root, durable=False) as repo:
        dk.commit_epoch(repo, "b", 9)
    page.wait_for("document.querySelector('circle[data-epoch=\"b#9\"]') !== null")
    page.wait_for(
        "document.getElementById('curve-info').textContent.startsWith('90 points')"
    )

    page.click("#cmp-a")
    page.click("#cmp-c")
    page.click("#compare-button")
    table = page.wait_for(
        "(() => { const t = document.getElementById('compare-table');"
        " return t ? [...t.rows].map(r => [...r.cells].map(c => c.textContent)) : null;"
        " })()"
    )
    page.screenshot("ui-compare.png")

    rows = {row[0]: row[1:] for row in table}
    assert rows[""] == ["a", "c"]
    assert rows["fork point"] == ["a#4", "a#4"]
    assert rows["head"] == ["a#10", "c#9"]
    assert rows["pruning plans"][1] == "plan-a (#4-#4), plan-b (#5-#6), plan-c (#7-#9)"


def test_ui_answers_only_requests_addressed_to_loopback(
    served: tuple[Path, str],
) -> None:
    _, url = served
    port = int(url.rstrip("/").rsplit(":", 1)[1])

    def get(path: str, host: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.putrequest("GET", path, skip_host=True)
            connection.putheader("Host", host)
            connection.endheaders()
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    assert get("/api/lineage", f"127.0.0.1:{port}")[0] == 200
    assert get("/api/lineage", f"localhost:{port}")[0] == 200
    assert get("/api/lineage", f"attacker.example:{port}")[0] == 403
    status, body = get("/api/view?rev=nope", f"127.0.0.1:{port}")
    assert status == 404 and b"unknown revision" in body
