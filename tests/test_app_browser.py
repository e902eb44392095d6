"""End to end in a real browser: `skinclip app` on a loopback port, driven by Chromium.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; without them
the test is skipped, unless ``SKINCLIP_BROWSER_TEST=required`` (set by CI) makes that a
failure. The screenshot goes to ``$SKINCLIP_TEST_ARTIFACTS`` (default ``test-artifacts/``).
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("SKINCLIP_TEST_ARTIFACTS", "test-artifacts"))
WAIT = 120  # seconds; model loading on a busy 2-core machine is slow


def _browser_or_skip():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = f"browser test needs {', '.join(missing)} (apt-get install chromium "
        reason += "chromium-driver; pip install selenium)"
        if os.environ.get("SKINCLIP_BROWSER_TEST") == "required":
            pytest.fail(reason)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"skinclip app exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the explorer did not answer at {url} within {WAIT} s")


def _start_app(files: dict, tmp_path: Path) -> tuple[subprocess.Popen, str, int]:
    port = _free_port()
    command = [sys.executable, "-m", "skinclip.cli", "app", "--port", str(port)]
    for name, value in files.items():
        command += [f"--{name}", value]
    env = {**os.environ, "HOME": str(tmp_path)}  # Streamlit writes its credentials file there
    with (tmp_path / "server.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return process, f"http://127.0.0.1:{port}", port


def test_sigterm_stops_the_server_too(explorer_files, tmp_path):
    process, url, port = _start_app(explorer_files, tmp_path)
    try:
        _wait_healthy(url, process)
        process.terminate()  # what `kill` or a service manager sends to `skinclip app`
        process.wait(timeout=120)
    finally:
        process.kill()
    with socket.socket() as s:  # nothing listens any more: the Streamlit child is gone
        assert s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def server(explorer_files, tmp_path):
    _browser_or_skip()
    process, url, _ = _start_app(explorer_files, tmp_path)
    try:
        _wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # No sandbox (CI runs as root); no background connections: this machine has no network.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,3000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def _wait_text(driver, text: str, timeout: float = WAIT) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout).until(
            lambda d: text in d.find_element("tag name", "body").text
        )
    except TimeoutException:
        shot = ARTIFACTS / "explorer-failure.png"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shot))
        raise AssertionError(f"{text!r} did not appear; see {shot}") from None


def _upload(driver, path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    field = WebDriverWait(driver, WAIT).until(
        lambda d: d.find_element("css selector", "input[type=file]")
    )
    field.send_keys(str(path))


def _remove_upload(driver) -> None:
    driver.find_element("css selector", "button[aria-label^='Remove ']").click()
    _wait_text(driver, "Upload an image to see")


def _click(driver, label: str) -> None:
    """Click the visible button ``label``, waiting for Streamlit to render it."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def visible(d):
        buttons = d.find_elements("tag name", "button")
        return next((b for b in buttons if b.text.strip() == label and b.is_displayed()), None)

    try:
        WebDriverWait(driver, WAIT).until(visible).click()
    except TimeoutException:
        shot = ARTIFACTS / "explorer-failure.png"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shot))
        raise AssertionError(f"no visible button {label!r}; see {shot}") from None


def test_upload_search_corrupt_file_and_screenshot(server, browser, tmp_path, make_image):
    from selenium.webdriver.support.ui import WebDriverWait

    good = make_image("lesion.jpg", size=(96, 80), color=(150, 80, 60))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")

    browser.get(server)
    _wait_text(browser, "Research tool, not a diagnostic device")

    _upload(browser, good)
    _wait_text(browser, "Most likely:")
    _wait_text(browser, "similarity")  # the gallery of similar cases
    _click(browser, "Ask")
    _wait_text(browser, "SkinVL answered:")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "explorer.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    # A corrupt file gets a clear error, and the page keeps working afterwards.
    _remove_upload(browser)
    _upload(browser, corrupt)
    _wait_text(browser, "corrupt.jpg")
    _wait_text(browser, "could not be decoded")
    _remove_upload(browser)
    _upload(browser, good)
    _wait_text(browser, "Most likely:")

    # Text search, on its own tab.
    for tab in browser.find_elements("css selector", "[role=tab]"):
        if tab.text.strip() == "Search by text":
            tab.click()
    query = WebDriverWait(browser, WAIT).until(
        lambda d: next(
            (
                e
                for e in d.find_elements("css selector", "input[aria-label^='Describe what']")
                if e.is_displayed()
            ),
            None,
        )
    )
    query.send_keys("melanoma on the back")
    assert "similarity" not in browser.find_element("tag name", "body").text
    _click(browser, "Search")
    _wait_text(browser, "similarity")
