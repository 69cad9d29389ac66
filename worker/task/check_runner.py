"""The Celery task's side of a check (torch-free): a timm model's weights loaded against its
architecture (worker/job/weights_check.py), a model or a dataset registered by URI read where
it lies (worker/job/uri_check.py). Each runs in a process of its own, under a lease on the row
that this thread extends while it waits, saving the progress the process prints
(service/ingest/checks.py); the outcome lands on the row. A check whose process could not
reach the store, or whose worker is shutting down, is given back to be sent again
(MAX_ATTEMPTS in all)."""

import json
import logging
import queue
import subprocess
import sys
import threading
import time
from typing import IO, Any

from service.config import get_settings
from service.db.sessions import session_scope
from service.ingest import by_uri, checks, datasets, models
from service.spec.names import TIMM
from service.store import StoreError, dataset_key, get_store
from worker.task.cache import Cache, CacheTooSmall
from worker.task.runner import DRAINING

log = logging.getLogger(__name__)
SILENT_S = 600  # a check's process is killed once it has printed nothing for this long
RETRY = 75  # worker/job/uri_check.py's exit status when the store could not be reached
Ran = tuple[int | str, dict[str, Any] | None, str]  # exit status, last line, stderr


def run(model_id: str) -> str:
    """Check a validating model; returns its status ("ready", "invalid", or as it was)."""
    with session_scope() as s:
        row = checks.MODELS.claim(s, model_id, get_settings().lease_s)
        if row is None:  # decided, or another worker checks it
            return models.get_model(s, model_id).status
        shape = [row.arch, row.num_classes, row.in_channels]
        key, uri, project = models.weights_key(row), row.uri or "", row.project_id
        weights: dict[str, Any] = {"sha256": row.sha256, "size": row.size}
        fetch = ["model", uri, key, *shape] if row.sha256 is None else None
        input_size = row.input_size or ""
    if fetch is not None:  # registered by URI: its bytes come into the store first
        weights = _read(checks.MODELS, model_id, uri, project, fetch)
        if "sha256" not in weights:  # refused, or given back
            return _record(checks.MODELS, model_id, weights) if weights else "validating"
    outcome: dict[str, Any] = {"status": "ready"}  # a zoo model's header was its check
    if str(shape[0]).startswith(TIMM):
        try:  # after the fetch: a model read by URI is in the store only now
            path = Cache.default().path(key, weights["sha256"], weights["size"])
        except (StoreError, FileNotFoundError, CacheTooSmall) as exc:
            return _give_back(checks.MODELS, model_id, f"its weights could not be read: {exc}")
        cmd = [sys.executable, "-m", "worker.job.weights_check", *shape, input_size, path]
        if not (outcome := _checked(checks.MODELS, model_id, cmd)):
            return "validating"  # fetched again next time: its sha256 was not recorded
    fetched = weights if fetch is not None else {}
    return _record(checks.MODELS, model_id, outcome | fetched)


def run_dataset(dataset_id: str) -> str:
    """Read a dataset registered by URI; returns its status ("validating" when given back)."""
    with session_scope() as s:
        row = checks.DATASETS.claim(s, dataset_id, get_settings().lease_s)
        if row is None:  # decided, or another worker reads it
            return datasets.get_dataset(s, dataset_id).status
        uri, project = row.uri or "", row.project_id
        args = ["dataset", row.format, uri, row.id]
        if row.class_names is not None:  # the names the registration gave its labels
            args.append(json.dumps(row.class_names))
    outcome = _read(checks.DATASETS, dataset_id, uri, project, args)
    if not outcome:
        return "validating"
    status = _record(checks.DATASETS, dataset_id, outcome)
    if status == "gone":  # deleted while it was read: what was stored of it goes too
        get_store().delete_prefix(dataset_key(dataset_id, ""))
    return status


def _read(
    check: checks.Checks, ident: str, uri: str, project: str, args: list[Any]
) -> dict[str, Any]:
    """What worker/job/uri_check.py found at `uri` (`args` say what to read), or {} when the
    check was given back."""
    with session_scope() as s:  # the allow-list may have changed since the registration
        why = by_uri.refused(s, uri, project)
    if why:
        return {"status": "invalid", "problems": [why]}
    return _checked(check, ident, [sys.executable, "-m", "worker.job.uri_check", *args])


def _checked(check: checks.Checks, ident: str, cmd: list[Any]) -> dict[str, Any]:
    """The outcome `cmd` printed, or {} when the check was given back to be sent again: the
    store could not be reached, or this worker is shutting down."""
    returncode, last, stderr = ran = _leased(check, ident, list(map(str, cmd)))
    if returncode != RETRY:
        return _outcome(ident, ran)
    _give_back(check, ident, stderr.strip()[-500:])
    return {}


def _give_back(check: checks.Checks, ident: str, why: str) -> str:
    """Not the row's fault (the store, a shutdown): its lease ends now and the watchdog
    sends the check again."""
    log.warning("check of %s given back: %s", ident, why)
    with session_scope() as s:
        check.extend(s, ident, 0)
    return "validating"


def _outcome(ident: str, ran: Ran) -> dict[str, Any]:
    returncode, last, stderr = ran
    if returncode == 0 and last is not None:
        return last
    # the check itself failed (the architecture cannot be built, out of memory...)
    log.error("check of %s exited %s: %s", ident, returncode, stderr)
    why = (stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": "invalid", "problems": [f"the check failed: {why}"[:500]]}


def _record(check: checks.Checks, ident: str, outcome: dict[str, Any]) -> str:
    """The row's new status; "gone" when it was deleted (or decided) meanwhile."""
    with session_scope() as s:
        recorded = check.record(s, ident, outcome)
    return str(outcome["status"]) if recorded else "gone"


def _leased(check: checks.Checks, ident: str, cmd: list[str]) -> Ran:
    """Run `cmd`, extending the row's lease every heartbeat with the latest progress it
    printed ({"progress": ...} lines), until it exits or has been silent SILENT_S."""
    heartbeat_s, lease_s = get_settings().heartbeat_s, get_settings().lease_s
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    lines, errors = _lines(proc.stdout), _lines(proc.stderr)
    last: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    heard = beat = time.monotonic()
    while True:
        try:
            line = lines.get(timeout=max(0.0, beat + heartbeat_s - time.monotonic()))
        except queue.Empty:
            line = ""
        if line is None:  # stdout closed: the process is ending
            proc.wait()
            return proc.returncode, last, "".join(_all(errors))
        if parsed := _parsed(line):
            heard = time.monotonic()
            if parsed.keys() == {"progress"}:
                progress = parsed["progress"]
            else:
                last = parsed
        if DRAINING.is_set():  # the worker is shutting down: the check is given back
            proc.kill()
            proc.wait()
            return RETRY, None, "the worker is shutting down"
        if time.monotonic() - heard > SILENT_S:
            proc.kill()
            proc.wait()
            return f"silent for {SILENT_S} s (killed)", None, "".join(_all(errors))
        if time.monotonic() >= beat + heartbeat_s:
            beat = time.monotonic()
            _extend(check, ident, lease_s, progress)


def _parsed(line: str) -> dict[str, Any] | None:
    """A line the check printed, when it is a JSON object (a library may print others)."""
    try:
        parsed = json.loads(line)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _extend(check: checks.Checks, ident: str, lease_s: float, progress: Any) -> None:
    saved = {"progress": progress} if progress is not None else {}
    try:
        with session_scope() as s:
            check.extend(s, ident, lease_s, **saved)
    except Exception:  # a DB blip: the lease has slack, try again next beat
        log.exception("could not extend the check of %s", ident)


def _lines(stream: IO[str]) -> "queue.Queue[str | None]":
    """The stream's lines as a thread reads them, then None at its end."""
    found: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in stream:
            found.put(line)
        found.put(None)

    threading.Thread(target=read, daemon=True).start()
    return found


def _all(found: "queue.Queue[str | None]") -> list[str]:
    """Every line of a stream that has ended."""
    lines = []
    while (line := found.get(timeout=10)) is not None:
        lines.append(line)
    return lines
