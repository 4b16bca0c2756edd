"""Swagger UI at /docs/ in a real headless Chromium, against the real waitress server: the page
lists the operations, calls the API through "Try it out" (anonymously, then with a bearer token
pasted into "Authorize"), and nothing it loads comes from anywhere but the server itself.

Needs Debian's `chromium` and `chromium-driver` packages; skipped without them. The system
chromedriver is given to Selenium explicitly, so Selenium Manager never runs (nor downloads).
"""

import json
import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common import driver_finder
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.support import PASSWORD
from tests.test_server import call, server, server_log  # noqa: F401  (fixtures)

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not CHROMEDRIVER.is_file(),
    reason="needs headless Chromium: `apt-get install -y chromium chromium-driver` "
    "(chromium on PATH and /usr/bin/chromedriver)",
)

WAIT_SECONDS = 60
EMAIL = "reader@example.com"


@pytest.fixture
def browser(tmp_path, monkeypatch):
    """Headless Chromium on a fresh profile; on the way out it leaves a screenshot and the DOM
    in tmp_path (docs-page.png, docs-page.html) for whoever has to read a failure."""

    def no_selenium_manager(*args, **kwargs):
        raise AssertionError("Selenium Manager must not run (it would download a driver)")

    monkeypatch.setattr(driver_finder.SeleniumManager, "binary_paths", no_selenium_manager)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-quic",
        "--window-size=1280,2000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    # Every request the page makes, from the DevTools protocol (Network.requestWillBeSent).
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        try:
            driver.save_screenshot(str(tmp_path / "docs-page.png"))
            (tmp_path / "docs-page.html").write_text(driver.page_source)
        except WebDriverException:
            pass  # the browser is gone: the test's own failure says more
        finally:
            driver.quit()


def test_swagger_ui_lists_and_calls_the_live_api(server, browser, tmp_path):  # noqa: F811
    origin = f"http://127.0.0.1:{server}"
    wait = WebDriverWait(browser, WAIT_SECONDS)

    def until(condition, what):
        try:
            return wait.until(condition)
        except TimeoutException:
            pytest.fail(
                f"timed out after {WAIT_SECONDS} s waiting for {what} "
                f"(screenshot and DOM: {tmp_path}/docs-page.png, docs-page.html)"
            )

    def execute(operation_id, tag):
        """Expand an operation, press Execute, and return its live response's status and body."""
        block_id = f"operations-{tag}-{operation_id}"
        block = until(ec.presence_of_element_located((By.ID, block_id)), block_id)
        if "is-open" not in block.get_attribute("class"):
            control = block.find_element(By.CSS_SELECTOR, ".opblock-summary-control")
            browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", control)
            control.click()
        until(
            lambda _: (
                block.find_elements(By.CSS_SELECTOR, ".btn.execute")
                or block.find_elements(By.CSS_SELECTOR, ".btn.try-out__btn:not(.cancel)")
            ),
            f"the Execute or Try it out button of {block_id}",
        )
        # tryItOutEnabled is on, so Execute is normally there already; press Try it out if not.
        if not block.find_elements(By.CSS_SELECTOR, ".btn.execute"):
            block.find_element(By.CSS_SELECTOR, ".btn.try-out__btn").click()
        button = until(
            lambda _: block.find_element(By.CSS_SELECTOR, ".btn.execute"),
            f"the Execute button of {block_id}",
        )
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
        button.click()
        status = until(
            lambda _: block.find_element(
                By.CSS_SELECTOR, ".live-responses-table .response .response-col_status"
            ),
            f"the live response of {block_id}",
        )
        body = until(
            lambda _: block.find_element(
                By.CSS_SELECTOR,
                ".live-responses-table .response-col_description .highlight-code pre",
            ),
            f"the live response body of {block_id}",
        )
        until(lambda _: body.text.strip(), f"a non-empty response body in {block_id}")
        return status.text.strip(), json.loads(body.text)

    # A user and a token, through the API itself.
    status, _, _ = call(
        server,
        "POST",
        "/api/v1/auth/register",
        {"name": "Reader", "email": EMAIL, "password": PASSWORD},
    )
    assert status == 201
    status, _, login = call(
        server, "POST", "/api/v1/auth/login", {"email": EMAIL, "password": PASSWORD}
    )
    assert status == 200
    token = login["data"]["access_token"]
    status, _, _ = call(
        server,
        "POST",
        "/api/v1/books",
        {"title": "Dune", "author": "Frank Herbert"},
        {"Authorization": f"Bearer {token}"},
    )
    assert status == 201

    browser.get(f"{origin}/docs/")

    # The document is loaded and rendered: its title, paths, summaries, one block per operation.
    until(ec.presence_of_element_located((By.CSS_SELECTOR, ".opblock")), "the first operation")
    until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".info .title"), "Bookshelf API"),
        "the document's title",
    )
    page = browser.find_element(By.ID, "swagger-ui").text
    for text in ("/api/v1/books", "/api/v1/books/{book_id}", "/api/v1/auth/login"):
        assert text in page
    assert "Search the catalog" in page
    assert len(browser.find_elements(By.CSS_SELECTOR, ".opblock")) >= 15
    errors = browser.find_elements(By.CSS_SELECTOR, ".errors-wrapper")
    assert not errors, errors[0].text

    # An anonymous call: GET /api/v1/books, answered by the server.
    status, body = execute("bookListGet", "books")
    assert status == "200", body
    assert [book["title"] for book in body["data"]] == ["Dune"] and body["meta"]["total"] == 1
    assert body["meta"]["request_id"]

    # Authorize with the bearer token, then GET /api/v1/auth/me.
    browser.find_element(By.CSS_SELECTOR, ".scheme-container .btn.authorize").click()
    dialog = until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, ".dialog-ux .modal-ux")),
        "the Authorize dialog",
    )
    field = until(
        lambda _: dialog.find_element(By.CSS_SELECTOR, ".auth-container input"),
        "the bearer token field",
    )
    field.send_keys(token)
    dialog.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper .btn.modal-btn.authorize").click()
    until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, ".dialog-ux button[aria-label='Remove authorization']")
        ),
        "the Authorize dialog to accept the token",
    )
    dialog.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper .btn-done").click()
    until(
        ec.invisibility_of_element_located((By.CSS_SELECTOR, ".dialog-ux .modal-ux")),
        "the Authorize dialog to close",
    )
    status, body = execute("meGet", "auth")
    assert status == "200", body
    assert body["data"]["email"] == EMAIL and body["data"]["name"] == "Reader"
    assert body["meta"]["request_id"]

    # The page logged no error to its console.
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []

    # Nothing left the machine: every URL the page requested is on the server's origin.
    requested = set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.add(message["params"]["request"]["url"])
    requested |= set(
        browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".concat(performance.getEntriesByType('navigation').map(e => e.name))"
        )
    )
    # chrome:// and the like are the browser's own pages (its start tab), never on the network.
    internal = ("data:", "blob:", "about:", "chrome:", "chrome-untrusted:", "devtools:")
    local = {url for url in requested if url.startswith(origin + "/")}
    foreign = sorted(url for url in requested - local if not url.startswith(internal))
    assert foreign == [], f"requests to elsewhere than {origin}: {foreign}"
    for path in (
        "/docs/",
        "/docs/swagger-ui-bundle.js",
        "/api/v1/openapi.json",
        "/api/v1/books",
        "/api/v1/auth/me",
    ):
        assert any(url.split("?")[0] == origin + path for url in local), (path, local)
