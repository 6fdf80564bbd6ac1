"""The report page in a real headless Chromium, against a real ``stubserver run``.

A small world on loopback (127.0.8.x): a DNS server, a CA, a healthy server
(``good.test``), a server whose certificate names another host (``wrongcert.test``), and
``page.test`` serving ``federation`` and ``report`` (loopback allowed, so its checks can
reach the others, and they it). Chromium (Debian's ``chromium``, installed when missing
and root) loads ``https://page.test:PORT/``, a person types a server name and presses
Enter, and the test reads what the page then shows.

How it waits: Chromium is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: NUL-terminated JSON on fds 3 and 4). Each read waits on
the pipe with ``select`` up to a deadline; "the report is shown" is a promise evaluated
in the page (``awaitPromise``) that resolves when the page sets ``data-state`` to
``done`` or ``failed``. No sleeps anywhere.

Screenshots (``healthy.png``, ``broken-phone.png``) go to ``$STUBSERVER_TEST_ARTIFACTS``
when set, else to the test's ``tmp_path``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from stubserver.tls.certificates import make_ca
from tests.support import PYTHON, REPO_ROOT, StubProcess, start_stubserver, write_stub_files

pytestmark = pytest.mark.integration

DNS_ADDRESS = "127.0.8.53"
PAGE = ("page.test", "127.0.8.10")
GOOD = ("good.test", "127.0.8.11")
WRONG_CERT = ("wrongcert.test", "127.0.8.12")
#: How long Chromium may take to start and answer one command, in seconds.
COMMAND_SECONDS = 30.0
#: How long one report may take to appear on the page, in seconds.
REPORT_SECONDS = 120.0
#: The browser window: a desktop, then a phone (CSS pixels).
DESKTOP = (1024, 800)
PHONE = (390, 844)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)


def _chromium() -> str | None:
    """The Chromium binary, installed from Debian's packages when root and missing."""
    found = shutil.which("chromium")
    if found is not None or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    done = subprocess.run(install, check=False, capture_output=True, env=env)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update"], check=False, capture_output=True, env=env)
        subprocess.run(install, check=False, capture_output=True, env=env)
    return shutil.which("chromium")


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def _artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("STUBSERVER_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class DevToolsError(Exception):
    """Chromium answered a command with an error, went away, or missed a deadline."""


class DevTools:
    """A DevTools protocol client over Chromium's ``--remote-debugging-pipe``."""

    def __init__(self, process: subprocess.Popen[bytes], to_browser: int, from_browser: int):
        self.process = process
        self._out = to_browser
        self._in = from_browser
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DevToolsError("no answer from Chromium before the deadline")
            readable, _, _ = select.select([self._in], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise DevToolsError(f"Chromium went away (exit {self.process.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(self, method: str, timeout: float = COMMAND_SECONDS, **params: Any) -> Any:
        """Send one command (to the attached page when there is one); its result."""
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            command["sessionId"] = self.session
        os.write(self._out, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_message(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise DevToolsError(f"{method}: {message['error']}")
                return message["result"]

    def wait_for_event(self, method: str, timeout: float = COMMAND_SECONDS) -> dict[str, Any]:
        """Wait for the next event named ``method``."""
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_message(deadline)
            if message.get("method") == method:
                return message

    def evaluate(self, expression: str, timeout: float = COMMAND_SECONDS) -> Any:
        """Evaluate ``expression`` in the page (awaiting a promise); its JSON value."""
        result = self.send(
            "Runtime.evaluate",
            timeout=timeout,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")


def _high_fd(fd: int) -> int:
    """``fd`` moved to a number >= 10, so that bash can put it on 3 or 4 safely."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


@dataclass
class Browser:
    """A running headless Chromium, attached to one page."""

    devtools: DevTools
    profile: Path

    def open(self, url: str, size: tuple[int, int], *, mobile: bool = False) -> None:
        """Load ``url`` in a window of ``size`` CSS pixels and wait for its load event."""
        width, height = size
        self.devtools.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )
        self.devtools.send("Page.navigate", url=url)
        self.devtools.wait_for_event("Page.loadEventFired")

    def type_and_submit(self, text: str) -> None:
        """Focus the server-name field by keyboard (Tab), type ``text`` and press Enter."""
        self.devtools.evaluate("document.activeElement && document.activeElement.blur()")
        self._key("Tab", "Tab", 9)
        focused = self.devtools.evaluate("document.activeElement.id")
        assert focused == "server-name", f"Tab reached {focused!r}, not the server name field"
        self.devtools.send("Input.insertText", text=text)
        self._key("Enter", "Enter", 13, text="\r")

    def _key(self, key: str, code: str, key_code: int, text: str | None = None) -> None:
        """Press and release one key, as a keyboard does."""
        down: dict[str, Any] = {"type": "rawKeyDown" if text is None else "keyDown"}
        if text is not None:
            down["text"] = text
        for event in (down, {"type": "keyUp"}):
            self.devtools.send(
                "Input.dispatchKeyEvent",
                key=key,
                code=code,
                windowsVirtualKeyCode=key_code,
                **event,
            )

    def wait_for_report(self) -> str:
        """Wait until the page shows a report (or says why not); the page state."""
        state: str = self.devtools.evaluate(
            """new Promise(resolve => {
                 const root = document.documentElement;
                 const settled = () => ["done", "failed"].includes(root.dataset.state);
                 if (settled()) { resolve(root.dataset.state); return; }
                 new MutationObserver(() => { if (settled()) resolve(root.dataset.state); })
                   .observe(root, {attributes: true, attributeFilter: ["data-state"]});
               })""",
            timeout=REPORT_SECONDS,
        )
        return state

    def visible_text(self, selector: str) -> str:
        """What a person sees in the element ``selector`` (``innerText``: rendered text)."""
        text: str = self.devtools.evaluate(
            f"document.querySelector({json.dumps(selector)}).innerText"
        )
        return text

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page (beyond the window) written to ``path``."""
        metrics = self.devtools.send("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        shot = self.devtools.send(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
        path.write_bytes(base64.b64decode(shot["data"]))


def _spki_hash(cert_pem: bytes) -> str:
    """Base64 SHA-256 of a certificate's public key: Chromium's certificate pin syntax."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return base64.b64encode(digest.finalize()).decode("ascii")


@dataclass
class World:
    """The servers the page checks, and the page's address."""

    folder: Path
    page_port: int
    page_cert_pem: bytes

    @property
    def page_url(self) -> str:
        return f"https://{PAGE[0]}:{self.page_port}/"


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    folder = Path(tempfile.mkdtemp(prefix="page-chromium-"))
    stubs: list[StubProcess] = []
    dns: subprocess.Popen[bytes] | None = None
    try:
        ca = make_ca()
        ca_path = folder / "ca.crt"
        ca_path.write_bytes(ca.cert_pem)
        names = (PAGE, GOOD, WRONG_CERT)
        zone = {"records": [{"name": n, "type": "A", "value": a} for n, a in names]}
        (folder / "zone.json").write_text(json.dumps(zone))
        dns = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "stubserver.devtools.dns_server",
                "--zone",
                str(folder / "zone.json"),
                "--listen",
                f"{DNS_ADDRESS}:0",
            ],
            stdout=subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        assert dns.stdout is not None
        ready = json.loads(dns.stdout.readline())
        dns_port = int(ready["listen"][0].rsplit(":", 1)[1])

        # Every server listens on the same port on its own address, so that each can
        # reach the others at their default port.
        port = _free_port(PAGE[1])
        federation = {
            "federation_dns_servers": [f"{DNS_ADDRESS}:{dns_port}"],
            "federation_custom_ca_list": [str(ca_path)],
            "ip_range_allowlist": ["127.0.0.0/8"],
            "federation_default_port": port,
        }
        page_files = write_stub_files(
            folder,
            PAGE[0],
            ca,
            bind=PAGE[1],
            port=port,
            resources=("federation", "report"),
            extra_config=federation,
        )
        stubs.append(start_stubserver(page_files.config_path))
        for name, address, tls_names in (
            (*GOOD, None),
            (*WRONG_CERT, ["other.test"]),
        ):
            files = write_stub_files(
                folder,
                name,
                ca,
                bind=address,
                port=port,
                tls_names=tls_names,
                extra_config=federation,
            )
            stubs.append(start_stubserver(files.config_path))
        yield World(folder=folder, page_port=port, page_cert_pem=page_files.tls.cert_pem)
    finally:
        for s in stubs:
            s.terminate()
        if dns is not None:
            dns.terminate()
            dns.wait(COMMAND_SECONDS)
            if dns.stdout is not None:
                dns.stdout.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def browser(world: World, tmp_path: Path) -> Iterator[Browser]:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed and cannot be (not root, or no apt-get)")
    profile = Path(tempfile.mkdtemp(prefix="page-chromium-profile-"))
    to_read, to_browser = os.pipe()
    from_browser, to_write = os.pipe()
    to_read, to_write = _high_fd(to_read), _high_fd(to_write)
    args = [
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        # page.test is reached on its loopback address; its certificate (from the test
        # CA, which Chromium does not trust) is accepted by its public key, and only it.
        f"--host-resolver-rules=MAP {PAGE[0]} {PAGE[1]}",
        f"--ignore-certificate-errors-spki-list={_spki_hash(world.page_cert_pem)}",
        "about:blank",
    ]
    log = (tmp_path / "chromium.log").open("wb")
    process = subprocess.Popen(
        [
            "bash",
            "-c",
            f'exec "$0" "$@" 3<&{to_read} 4>&{to_write} {to_read}<&- {to_write}>&-',
            chromium,
            *args,
        ],
        pass_fds=(to_read, to_write),
        stdout=log,
        stderr=log,
    )
    os.close(to_read)
    os.close(to_write)
    devtools = DevTools(process, to_browser, from_browser)
    try:
        targets = devtools.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        attached = devtools.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)
        devtools.session = attached["sessionId"]
        devtools.send("Page.enable")
        yield Browser(devtools=devtools, profile=profile)
    finally:
        devtools.session = None
        with contextlib.suppress(DevToolsError, OSError):
            devtools.send("Browser.close", timeout=5)
        try:
            process.wait(COMMAND_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.close(to_browser)
        os.close(from_browser)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


def test_healthy_and_broken_servers_as_a_person_sees_them(
    world: World, browser: Browser, tmp_path: Path
) -> None:
    """Typed into the page's form, a healthy server shows "Federation OK" with no problem,
    and a server with a certificate for another name shows "Federation failed" with the
    certificate's fix naming that other name; both reports are readable on a phone."""
    artifacts = _artifacts(tmp_path)

    browser.open(world.page_url, DESKTOP)
    browser.type_and_submit(GOOD[0])
    assert browser.wait_for_report() == "done", browser.visible_text("#result")
    verdict = browser.visible_text("#verdict")
    status = browser.visible_text("#status")
    browser.screenshot(artifacts / "healthy.png")
    assert verdict == f"{GOOD[0]}: Federation OK"
    assert status.startswith(f"{GOOD[0]}: Federation OK. 0 problems found")
    assert "What to fix" not in browser.visible_text("#result")
    assert "Raw JSON report" in browser.visible_text("#result")
    assert '"FederationOK": true' not in browser.visible_text("#result")  # behind <details>
    assert browser.devtools.evaluate("location.search") == f"?server_name={GOOD[0]}"

    browser.open(world.page_url, PHONE, mobile=True)
    browser.type_and_submit(WRONG_CERT[0])
    assert browser.wait_for_report() == "done", browser.visible_text("#result")
    browser.screenshot(artifacts / "broken-phone.png")
    assert browser.visible_text("#verdict") == f"{WRONG_CERT[0]}: Federation failed"
    result = browser.visible_text("#result")
    assert "What to fix" in result
    assert "[certificate]" in result
    fix = next(line for line in result.splitlines() if line.startswith("Fix:"))
    assert "other.test" in fix
    # Readable on a phone: nothing is wider than the screen.
    assert browser.devtools.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
        "the page scrolls sideways on a phone"
    )


def test_link_with_server_name_runs_the_check(world: World, browser: Browser) -> None:
    """Opening /?server_name=NAME fills the field in and shows NAME's report at once."""
    browser.open(f"{world.page_url}?server_name={GOOD[0]}", DESKTOP)
    assert browser.wait_for_report() == "done", browser.visible_text("#result")
    assert browser.visible_text("#verdict") == f"{GOOD[0]}: Federation OK"
    assert browser.devtools.evaluate("document.getElementById('server-name').value") == GOOD[0]
