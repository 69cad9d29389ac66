"""A headless Debian chromium driven by selenium, for the dashboard's browser tests. Importing
this skips the importing module when chromium is missing, except under CI (which installs it:
.ci/run), where the test fails instead. The network is closed: no name but 127.0.0.1
resolves, so a page that reaches for a CDN asset fails to show it."""

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip(
        "no /usr/bin/chromium: apt-get install chromium chromium-driver (CI installs it)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402  (after the skip: the browser is what it drives)
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service as Driver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1400",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


@contextmanager
def chromium(profile: Path, before_each_page: str | None = None) -> Iterator[WebDriver]:
    """A browser with its own profile folder; `before_each_page` runs in every page before
    the page's own scripts."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Driver(str(CHROMEDRIVER)), options=options)
    if before_each_page:
        driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": before_each_page}
        )
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, until: Callable[[WebDriver], Any], timeout: float = 30) -> Any:
    """Until `until(driver)` is truthy; an element the page replaced meanwhile is looked up
    again at the next try."""
    stale = [StaleElementReferenceException]
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=stale).until(until)


def shown(css: str) -> Callable[[WebDriver], Any]:
    def find(driver: WebDriver) -> Any:
        found = [e for e in driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
        return found[0] if found else False

    return find


def use_key(driver: WebDriver, key: str) -> None:
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
