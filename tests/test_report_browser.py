"""Open report.html in headless Chromium: every image loads and the console has no errors.

Skipped when Chromium or chromedriver is missing, unless the environment variable CI is
"true": then a missing browser fails the test.
"""

import os
import shutil
from pathlib import Path

import pytest

from _fake_sweep import make_optimization_sweep
from tfd_sweep.report import build_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _require_browser() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if not missing:
        return
    reason = (f"headless browser test needs {', '.join(missing)}; install with "
              "apt-get install -y chromium chromium-driver")
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI=true, so a missing browser is a failure)")
    pytest.skip(reason)


@pytest.fixture()
def browser(tmp_path):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_report_opens_with_images_and_no_console_errors(browser, tmp_path, lang):
    sweep_dir = tmp_path / "sweep"
    make_optimization_sweep(sweep_dir)
    report = build_report(sweep_dir, lang=lang)

    browser.get(report.html_path.resolve().as_uri())
    browser.execute_script("return document.readyState")
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);")
    title = browser.title
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]

    assert len(images) == 4
    for alt, complete, width in images:
        assert complete, alt
        assert width > 0, alt
    assert "synthetic-faces" in title
    assert errors == []
