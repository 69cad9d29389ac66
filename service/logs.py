"""Logging for every Distillery process: the API, the Celery worker and a job's processes.
`configure(settings)` gives the root logger one stderr handler, as text (`distillery up`) or
one JSON object a line (`DISTILLERY_LOG_FORMAT=json`): `ts`, `level`, `logger`, `message`,
`job_id` when one is in context, the request's id in the API, a call's `extra` fields, and
`exc` for a traceback. The worker's runner and a job's processes set the job in context
(`job_context`); in the API a request to a route with a `{job_id}` is about that job
(service/metrics.py's middleware binds the request)."""

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from service.config import Settings

JOB_ID: ContextVar[str | None] = ContextVar("distillery_job_id", default=None)
# the ASGI scope of the request being served and its id (set by the API's middleware)
REQUEST: ContextVar[tuple[MutableMapping[str, Any], str] | None] = ContextVar(
    "distillery_request", default=None
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(job_tag)s: %(message)s"
# what every LogRecord has: anything else on a record came from `extra` and is logged
RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "job_tag"}
QUIET_IN_JSON = ("uvicorn.access",)  # the API's middleware writes one line per request


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Records logged inside carry `job_id`."""
    token = JOB_ID.set(job_id)
    try:
        yield
    finally:
        JOB_ID.reset(token)


def current_job() -> str | None:
    if (job_id := JOB_ID.get()) is not None:
        return job_id
    request = REQUEST.get()
    return request[0].get("path_params", {}).get("job_id") if request else None


class ContextFilter(logging.Filter):
    """Adds the job (and the API request) in context to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = record.job_id = current_job()
        request = REQUEST.get()
        if request is not None and not hasattr(record, "request_id"):
            record.request_id = request[1]
        record.job_tag = f" [{job_id}]" if job_id else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= {k: v for k, v in vars(record).items() if k not in RECORD_ATTRS}
        if entry.get("job_id") is None:
            entry.pop("job_id", None)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (a test's capture swaps it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def handler(log_format: str) -> logging.Handler:
    out = StderrHandler()
    out.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    out.addFilter(ContextFilter())
    return out


def configure(settings: Settings) -> None:
    """The root logger writes to stderr in the configured format; safe to call again (it
    replaces the handler it or logging.basicConfig installed, and leaves others alone)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if type(old) in (StderrHandler, logging.StreamHandler):
            root.removeHandler(old)
    root.addHandler(handler(settings.log_format))
    root.setLevel(settings.log_level)
    logging.captureWarnings(settings.log_format == "json")  # warnings as records, not text
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if settings.log_format == "json":  # through the root's handler, not uvicorn's own
            logger.handlers.clear()
            logger.propagate = True
        logger.disabled = settings.log_format == "json" and name in QUIET_IN_JSON
