"""The dashboard in a real headless browser against a real API (keys required): a refused key
gets its own message, not the no-key one; a job's best accuracy is its best epoch's, not its
latest; an epoch a later attempt retrained is shown once, with that attempt's numbers.

The job sits in a queue no worker takes; its attempts and epochs are written as a worker's
would be (service.jobs.lifecycle, in this process). One backend (SQLite), as the other
dashboard test."""

from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By  # noqa: E402  (after browser's skip)
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from sqlalchemy import update

from service import keys
from service.db.sessions import session_scope
from service.db.tables import Job, utcnow
from service.jobs import lifecycle
from tests.conftest import Backend
from tests.e2e.browser import chromium, shown, use_key, wait  # noqa: E402
from tests.e2e.conftest import Service, fresh_service

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]

SPEC = {
    "name": "resumed",
    "method": {"name": "supervised"},
    "student": {"arch": "resnet8"},
    "data": {"dataset": "digits"},
    "train": {"epochs": 5, "batch_size": 64},
    "resources": {"queue": "default"},  # nobody listens there
}


@pytest.fixture(scope="module")
def keyed(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    logs = tmp_path_factory.mktemp("logs-dashboard-attempts")
    with fresh_service(backend, logs, {"DISTILLERY_REQUIRE_KEYS": "true"}) as svc:
        yield svc


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def epochs(job_id: str, owner: str, *accuracies: tuple[int, float]) -> None:
    for epoch, val_acc in accuracies:
        with session_scope() as s:
            assert lifecycle.record_epoch(s, job_id, owner, {"epoch": epoch, "val_acc": val_acc})


def resumed_and_running(job_id: str) -> None:
    """Attempt 1 records epochs 1-2 and its worker is lost; attempt 2 resumes from epoch 1's
    checkpoint and records epochs 2-4 (its best, 0.636, at epoch 3)."""
    with session_scope() as s:
        assert lifecycle.claim(s, job_id, "w1", lease_s=600) is not None
    epochs(job_id, "w1", (1, 0.5), (2, 0.9))
    with session_scope() as s:  # the lease runs out; the API's watchdog or this one requeues
        s.execute(update(Job).where(Job.id == job_id).values(lease_until=utcnow()))
    with session_scope() as s:
        lifecycle.watchdog(s)
    with session_scope() as s:
        assert lifecycle.claim(s, job_id, "w2", lease_s=600) is not None
    epochs(job_id, "w2", (2, 0.6), (3, 0.636), (4, 0.625))


def test_a_refused_key_is_told_apart_from_no_key(keyed: Service, browser: WebDriver) -> None:
    browser.get(keyed.url + "/")
    wait(browser, shown("#key-missing"))
    assert not browser.find_element(By.ID, "key-refused").is_displayed()
    use_key(browser, "dk_not_a_key_of_this_server")
    refused = wait(browser, shown("#key-refused"))
    assert "refused the key" in refused.text
    assert not browser.find_element(By.ID, "key-missing").is_displayed()


def test_best_accuracy_and_a_retrained_epoch(keyed: Service, browser: WebDriver) -> None:
    with session_scope() as s:
        _, key = keys.create_key(s, "dashboard-attempts", "browser")
    r = keyed.http.post("/v1/jobs", json=SPEC, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    resumed_and_running(job_id)
    browser.get(keyed.url + "/")
    use_key(browser, key)
    row = wait(browser, shown(f'#jobs tr[data-job="{job_id}"]'))
    assert row.find_elements(By.CSS_SELECTOR, "td.num")[-1].text == "63.6%"  # not 62.5%

    browser.get(f"{keyed.url}/#/jobs/{job_id}")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#events li[data-epoch]")) == 4)
    items = browser.find_elements(By.CSS_SELECTOR, "#events li[data-epoch]")
    assert [i.get_attribute("data-epoch") for i in items] == ["1", "2", "3", "4"]
    assert "(attempt 2)" in items[1].text
    script = "return Chart.getChart(document.querySelector('#acc-chart canvas')).data.datasets"
    assert browser.execute_script(script)[0]["data"] == [0.5, 0.6, 0.636, 0.625]
    cards = browser.find_element(By.CSS_SELECTOR, ".cards").text
    assert "63.6%" in cards and "90.0%" not in cards
