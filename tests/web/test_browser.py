"""The web UI in a real browser: Debian's Chromium, headless, driven by Playwright.

Log in, create a bucket, upload a 30 MiB file (in parts) and watch its progress bar reach 100%,
see it listed, download it and compare the bytes, rename it, drop a file onto the page, delete
with confirmation. Screenshots go to tests/artifacts/ (git-ignored; CI keeps them). Never
downloads a browser: ``executable_path`` is the system's /usr/bin/chromium.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import need
from tests.fixtures.web import ROOT_PASSWORD, ROOT_USER

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = os.environ.get("CAS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
BIG = 30 << 20
TIMEOUT_MS = 120_000


@pytest.fixture
def page(tmp_path):
    need(Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None,
         f"{CHROMIUM} is missing (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "the playwright package is missing (pip install playwright; no browser download)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}")
                if not req.url.startswith(("http://127.0.0.1", "http://localhost")) else None)
        page.js_errors = errors
        try:
            yield page
        finally:
            context.close()
            browser.close()


def test_login_upload_download_delete(page, web_server, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(BIG))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()

    # log in
    page.goto(web_server.web_url)
    page.fill("#login-user", ROOT_USER)
    page.fill("#login-password", "wrong-password")
    page.click("#login-submit")
    page.wait_for_selector("#login-error:has-text('Wrong')")
    page.fill("#login-password", ROOT_PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#app-view", state="visible")
    assert ROOT_USER in page.inner_text("#whoami")

    # create a bucket
    page.fill("#new-bucket-name", "browser-test")
    page.click("#new-bucket-btn")
    page.wait_for_selector("#buckets a.active[data-bucket='browser-test']")
    page.wait_for_selector("#empty-note", state="visible")

    # upload 30 MiB and record every value its progress bar shows
    page.evaluate("""() => {
        window.__progress = [];
        new MutationObserver((records) => {
            for (const r of records) {
                const row = r.target.closest && r.target.closest(".upload-row[data-name='big.bin']");
                if (row && row.dataset.percent) window.__progress.push(Number(row.dataset.percent));
            }
        }).observe(document.querySelector("#upload-list"),
                   {subtree: true, attributes: true, attributeFilter: ["data-percent"]});
    }""")
    page.set_input_files("#file-input", str(big))
    row = ".upload-row[data-name='big.bin']"
    page.wait_for_selector(row + ".done", timeout=TIMEOUT_MS)
    assert page.eval_on_selector(row + " progress", "p => [p.value, p.max]") == [100, 100]
    assert page.inner_text(row + " .pct") == "100%"
    assert page.inner_text("#overall-text") == "100%"
    seen = page.evaluate("window.__progress")
    assert seen[-1] == 100 and seen == sorted(seen)
    assert len({p for p in seen if 0 < p < 100}) >= 2, f"no intermediate progress: {seen}"

    # listed, with its size
    listed = "#objects tr[data-key='big.bin']"
    page.wait_for_selector(listed)
    assert "30.0 MiB" in page.inner_text(listed)
    page.wait_for_selector("#storage dd[data-stat='Logical']")
    page.screenshot(path=str(ARTIFACTS / "web-ui-uploaded.png"), full_page=True)

    # download it and compare the bytes
    with page.expect_download(timeout=TIMEOUT_MS) as info:
        page.click(listed + " button.download")
    download = info.value
    assert download.suggested_filename == "big.bin"
    saved = tmp_path / "downloaded.bin"
    download.save_as(str(saved))
    assert saved.stat().st_size == BIG
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest

    # rename it (a metadata operation) through the dialog
    page.click(listed + " button.rename")
    page.fill("#modal-input", "renamed.bin")
    page.click("#modal-ok")
    page.wait_for_selector("#objects tr[data-key='renamed.bin']")
    assert page.query_selector(listed) is None

    # drag and drop a small file onto the listing
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File(["dropped bytes"], "dropped.txt", {type: "text/plain"}));
        const zone = document.querySelector("#drop-zone");
        zone.dispatchEvent(new DragEvent("dragenter", {dataTransfer: dt, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""")
    page.wait_for_selector(".upload-row[data-name='dropped.txt'].done")
    page.wait_for_selector("#objects tr[data-key='dropped.txt']")
    assert web_server.request("GET", "/api/buckets/browser-test/object?key=dropped.txt",
                              basic=(ROOT_USER, ROOT_PASSWORD))[2] == b"dropped bytes"

    # delete with confirmation: cancel first, then confirm
    renamed = "#objects tr[data-key='renamed.bin']"
    page.click(renamed + " button.delete")
    page.wait_for_selector("#modal[open]")
    assert "renamed.bin" in page.inner_text("#modal-message")
    page.click("#modal-cancel")
    assert page.query_selector(renamed) is not None
    page.click(renamed + " button.delete")
    page.click("#modal-ok")
    page.wait_for_selector(renamed, state="detached")
    status, _, _ = web_server.request("GET", "/api/buckets/browser-test/object?key=renamed.bin",
                                      basic=(ROOT_USER, ROOT_PASSWORD))
    assert status == 404
    page.screenshot(path=str(ARTIFACTS / "web-ui.png"), full_page=True)
    assert page.js_errors == []


def test_an_interrupted_upload_resumes_with_the_missing_parts(page, web_server, tmp_path):
    """Part 2 fails (network error) until the page is reloaded; choosing the same file again
    continues the same multipart upload: part 1 is not sent a second time."""
    data = os.urandom(20 << 20)  # three parts of 8 MiB
    src = tmp_path / "resume.bin"
    src.write_bytes(data)
    sent: list[str] = []
    page.on("request", lambda req: sent.append(req.url.split("/api/uploads/")[1])
            if "/api/uploads/" in req.url and req.method == "PUT" else None)

    page.goto(web_server.web_url)
    page.fill("#login-user", ROOT_USER)
    page.fill("#login-password", ROOT_PASSWORD)
    page.click("#login-submit")
    page.fill("#new-bucket-name", "resume-test")
    page.click("#new-bucket-btn")
    page.wait_for_selector("#buckets a.active[data-bucket='resume-test']")

    page.route("**/parts/2", lambda route: route.abort("connectionreset"))
    page.set_input_files("#file-input", str(src))
    row = ".upload-row[data-name='resume.bin']"
    page.wait_for_selector(row + " .status:has-text('retrying')")
    assert [s.split("/")[-1] for s in sent] == ["1", "2"]
    page.unroute("**/parts/2")

    page.reload()  # the tab keeps its session; the upload id is remembered for this file
    page.wait_for_selector("#buckets a.active[data-bucket='resume-test']")
    sent.clear()
    page.set_input_files("#file-input", str(src))
    page.wait_for_selector(row + ".done")
    assert [s.split("/")[-1] for s in sent] == ["2", "3"], sent
    assert page.inner_text(row + " .pct") == "100%"
    status, _, got = web_server.request("GET", "/api/buckets/resume-test/object?key=resume.bin",
                                        basic=(ROOT_USER, ROOT_PASSWORD))
    assert status == 200 and got == data
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('cas-upload:'))") == []
