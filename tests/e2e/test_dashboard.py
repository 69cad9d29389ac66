"""The dashboard in a real headless browser (Debian's chromium, driven by selenium), against
a real API under uvicorn and a real worker, with keys required: the page asks for a key, a
job submitted over HTTP appears in the table, its accuracy curve grows epoch by epoch, the
events feed ends on the terminal status, a download button fetches the model card, and
/docs and /redoc render with every host but 127.0.0.1 unreachable.

One backend (SQLite): the page only talks to the API, which the other e2e tests cover on both.
A screenshot is saved to $DISTILLERY_TEST_ARTIFACTS (else pytest's tmp_path)."""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By  # noqa: E402  (after browser's skip)
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

from service import keys
from service.db.sessions import session_scope
from tests.conftest import Backend
from tests.e2e.browser import chromium, shown, wait  # noqa: E402
from tests.e2e.conftest import Service, fresh_service

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

EPOCHS = 2
SPEC = {
    "name": "dashboard-e2e",
    "method": {"name": "supervised"},
    "student": {"arch": "resnet8"},
    "data": {"dataset": "digits", "val_fraction": 0.2},
    "train": {"epochs": EPOCHS, "batch_size": 64, "seed": 0},
}


@pytest.fixture(scope="module")
def keyed(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    logs = tmp_path_factory.mktemp("logs-dashboard")
    with fresh_service(backend, logs, {"DISTILLERY_REQUIRE_KEYS": "true"}, worker=False) as svc:
        yield svc


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium-profile"), RECORDER) as driver:
        yield driver


def points(driver: WebDriver, box: str) -> int:
    """How many epochs the chart in `box` plots (the page writes it as data-points)."""
    return int(driver.find_element(By.ID, box).get_attribute("data-points") or 0)


# Runs in the page before its own scripts: logs, in order, the job and every metrics epoch
# each poll of one job's view brought back (before the page reads them) and the accuracy
# chart's data-points after each render. The test asserts on this history, not on samples.
RECORDER = r"""
window.pageLog = [];
const fetched = window.fetch;
window.fetch = async (...args) => {
  const response = await fetched(...args);
  const path = new URL(response.url).pathname;
  if (response.ok && /^\/v1\/jobs\/[^/]+(\/events)?$/.test(path)) {
    const body = await response.clone().json();
    window.pageLog.push(path.endsWith("/events")
      ? {metrics: body.data.filter((e) => e.type === "metrics").map((e) => e.data.epoch)}
      : {status: body.status});
  }
  return response;
};
new MutationObserver((records) => {
  for (const r of records) {
    if (r.target.id !== "acc-chart") continue;
    window.pageLog.push({points: Number(r.target.dataset.points)});
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ["data-points"]});
"""


def page_log(driver: WebDriver) -> list[dict[str, Any]]:
    return list(driver.execute_script("return window.pageLog"))


def rendered(log: list[dict[str, Any]]) -> list[int]:
    """The accuracy chart's data-points after each render, checking on the way that each
    render plotted every epoch the polls had brought by then, no more, no fewer."""
    brought: list[int] = []
    drawn = []
    for entry in log:
        brought += entry.get("metrics", [])
        if "points" in entry:
            assert entry["points"] == len(brought), log
            drawn.append(entry["points"])
    assert brought == list(range(1, EPOCHS + 1)), log  # each epoch once, in order
    return drawn


def chart_data(driver: WebDriver, box: str) -> list[dict[str, Any]]:
    script = "return Chart.getChart(document.querySelector(arguments[0] + ' canvas')).data.datasets"
    datasets = driver.execute_script(script, f"#{box}")
    return [{"label": d["label"], "data": d["data"]} for d in datasets]


def artifacts_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DISTILLERY_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_dashboard_follows_a_job_live(
    keyed: Service, browser: WebDriver, tmp_path: Path
) -> None:
    """The job waits, queued, for a worker the test starts once the page shows it: the
    page's history then begins with an empty chart, whatever the machine's speed."""
    enter_key(keyed, browser)
    job = keyed.submit(SPEC)
    row = wait(browser, shown(f'#jobs tr[data-job="{job["id"]}"]'))  # the table refreshes
    assert "resnet8" in row.text and "supervised" in row.text
    row.find_element(By.LINK_TEXT, job["id"]).click()
    wait(browser, lambda d: any("points" in e for e in page_log(d)))
    keyed.start_worker()
    wait(browser, shown("#model-card"), 600)  # the page's last poll: the job ended

    log = page_log(browser)
    print(f"the job's page, its renders: {[e['points'] for e in log if 'points' in e]}")
    drawn = rendered(log)
    assert drawn[0] == 0 and drawn == sorted(drawn) and drawn[-1] == EPOCHS, drawn
    statuses = [e["status"] for e in log if "status" in e]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded", statuses
    feed = browser.find_elements(By.CSS_SELECTOR, "#events li[data-type=status]")
    assert "job succeeded" in feed[-1].text

    finished = keyed.job(job["id"])
    metrics = [e["data"] for e in keyed.events(job["id"]) if e["type"] == "metrics"]
    accuracy = chart_data(browser, "acc-chart")[0]
    assert accuracy == {"label": "student val_acc", "data": [m["val_acc"] for m in metrics]}
    losses = {d["label"] for d in chart_data(browser, "loss-chart")}
    assert {"train_loss", "train_ce"} <= losses, losses
    assert f"{EPOCHS}/{EPOCHS}" in browser.find_element(By.CSS_SELECTOR, ".summary").text

    card = download_model_card(browser, tmp_path)
    assert card["job_id"] == job["id"]
    assert card["metrics"] == finished["result"]["metrics"]
    assert card["architecture"] in browser.find_element(By.ID, "model-card").text

    shot = artifacts_dir(tmp_path) / "dashboard-job.png"
    assert browser.save_screenshot(str(shot))
    print(f"dashboard screenshot: {shot}")
    distilled_beside_teacher_and_baseline(keyed, browser, finished, shot.parent)


def enter_key(keyed: Service, browser: WebDriver) -> None:
    """A key made on the server (service.keys): the page asks for it, the user pastes it."""
    with session_scope() as s:
        _, key = keys.create_key(s, "dashboard-e2e", "browser")
    assert keyed.http.get("/v1/jobs").status_code == 401
    keyed.http.headers["Authorization"] = f"Bearer {key}"
    browser.get(keyed.url + "/")
    wait(browser, shown("#key-prompt"))  # the jobs table's first request was a 401
    browser.find_element(By.ID, "key").send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait(browser, lambda d: "No jobs yet." in d.find_element(By.ID, "jobs").text)
    assert not browser.find_element(By.ID, "key-prompt").is_displayed()


def distilled_beside_teacher_and_baseline(
    keyed: Service, browser: WebDriver, teacher: dict[str, Any], shots: Path
) -> None:
    """A one-epoch KD student of the finished job: its page shows the teacher's accuracy and
    the scratch baseline (the teacher is a supervised resnet8 on the same data); the compare
    view overlays both jobs' curves."""
    spec = {
        **SPEC,
        "name": "dashboard-kd",
        "method": {"name": "kd"},
        "teacher": {"job": teacher["id"]},
    }
    student = keyed.submit({**spec, "train": {**SPEC["train"], "epochs": 1}})
    student = keyed.wait_status(student["id"], "succeeded")
    browser.get(f"{keyed.url}/#/jobs/{student['id']}")
    expected = [
        f"teacher val_acc\n{100 * student['result']['teacher']['val_acc']:.1f}%",
        f"scratch baseline\n{100 * teacher['result']['metrics']['best']['val_acc']:.1f}%",
    ]
    # The cards and the charts are drawn together once the poll has fetched the teacher's
    # baseline (the events list fills earlier in that poll): wait for what the page ends on.
    wait(
        browser,
        lambda d: all(t in d.find_element(By.CSS_SELECTOR, ".cards").text for t in expected),
    )
    assert "job succeeded" in browser.find_element(By.ID, "events").text
    labels = [d["label"] for d in chart_data(browser, "acc-chart")]
    assert labels == ["student val_acc", "teacher", "scratch baseline"]
    wait(browser, shown("#model-card"))
    assert browser.save_screenshot(str(shots / "dashboard-kd.png"))
    print(f"dashboard screenshot: {shots / 'dashboard-kd.png'}")

    ids = [teacher["id"], student["id"]]
    browser.get(f"{keyed.url}/#/compare?jobs={','.join(ids)}")
    wait(browser, lambda d: points(d, "compare-acc") == EPOCHS)
    assert [d["label"] for d in chart_data(browser, "compare-acc")] == ids
    table = browser.find_element(By.ID, "compare").text
    assert "kd" in table and "supervised" in table


def download_model_card(browser: WebDriver, folder: Path) -> dict[str, Any]:
    downloads = folder / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    wait(browser, shown('button[data-download="model.json"]')).click()
    path = downloads / "model.json"
    wait(browser, lambda _: path.exists() and path.stat().st_size > 0)
    return dict(json.loads(path.read_text()))


def hosts(browser: WebDriver, received: bool = False) -> set[str]:
    """Hosts the page asked for resources (only those that answered, with `received`)."""
    script = "return performance.getEntriesByType('resource').map(e => [e.name, e.responseStatus])"
    entries = browser.execute_script(script)
    return {url.split("/")[2] for url, status in entries if status or not received}


def test_the_api_docs_render_offline(keyed: Service, browser: WebDriver) -> None:
    api = f"127.0.0.1:{keyed.port}"
    browser.get(keyed.url + "/docs")
    op = wait(browser, shown("#operations-jobs-create_job_v1_jobs_post"))
    assert "/v1/jobs" in op.text
    assert hosts(browser) == {api}

    browser.get(keyed.url + "/redoc")
    wait(browser, lambda d: "Create Job" in d.find_element(By.TAG_NAME, "body").text)
    # its sidebar's vendor logo is hot-linked; the page's CSP blocks it (the logo hides)
    assert hosts(browser, received=True) == {api}
    assert hosts(browser) <= {api, "cdn.redoc.ly"}
