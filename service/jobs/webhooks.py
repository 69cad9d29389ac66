"""Webhooks: a project's URLs are POSTed its jobs' terminal states (and, when asked, each
epoch) as Standard Webhooks (https://www.standardwebhooks.com) define them: a JSON body
`{"type", "timestamp", "data"}` with the headers `webhook-id`, `webhook-timestamp` and
`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the
webhook's secret (`whsec_<base64>`).

An outbox: `on_job_event` adds the deliveries in the transaction of the job event that calls
for them, so an event is sent if and only if it happened, and a worker never waits on a
receiver. The sender (`run_sender`) runs only in the API processes, as a task of their
lifespan beside the watchdog (the worker writes deliveries, it sends none): it claims due
deliveries with a conditional UPDATE (FOR UPDATE SKIP LOCKED on PostgreSQL), so two API
processes never send one at the same time, POSTs them a few at a time, each within
`webhook_timeout_s`, and records the answer: 2xx ends it; anything else is tried again after
the next wait of `webhook_retry_s` until `webhook_max_attempts`, then it has failed. A
sender lost mid-POST leaves its claim to expire and the delivery is sent again with the same
`webhook-id`: delivery is at least once, and a receiver drops repeats by that id.

URLs are http(s) only, checked at registration. The API POSTs to whatever host a project
names, its own network included (SSRF): an operator serving projects it does not trust
routes the API's outbound traffic through an egress proxy or firewall that lets only public
addresses through."""

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import paging
from service.db.sessions import get_or_404, session_scope
from service.db.tables import Job, Webhook, WebhookDelivery, new_id, utcnow
from service.db.tenancy import current_project
from service.errors import Conflict, NotFound

log = logging.getLogger(__name__)

# a job's terminal states (service/jobs/lifecycle.py TERMINAL, tied by a test) and each
# epoch's metrics
EVENTS = ("job.succeeded", "job.failed", "job.cancelled", "job.epoch")
DEFAULT_EVENTS = EVENTS[:3]
PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
SECRET_PREFIX = "whsec_"
MAX_ERROR = 500  # characters of a failed attempt's error kept
LEASE_MARGIN_S = 60.0  # a claim outlives the POST by this much before another sender may


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: str, body: str) -> str:
    """The `webhook-signature` header's value."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


# -- webhooks ------------------------------------------------------------------------------


def register(s: Session, url: str, events: Iterable[str]) -> Webhook:
    """A new webhook of the caller's project, with a new secret."""
    hook = Webhook(
        id=new_id("wh"),
        project_id=current_project(),
        url=url,
        secret=new_secret(),
        events=list(dict.fromkeys(events)),
    )
    s.add(hook)
    s.flush()
    return hook


def get_webhook(s: Session, webhook_id: str) -> Webhook:
    hook = get_or_404(s, Webhook, "webhook", webhook_id)
    if hook.deleted_at is not None:
        raise NotFound("webhook", webhook_id)
    return hook


def list_webhooks(
    s: Session, *, limit: int, cursor: str | None
) -> tuple[list[Webhook], str | None]:
    live = Webhook.deleted_at.is_(None)
    return paging.newest_first(s, Webhook, live, limit=limit, cursor=cursor)


def delete(s: Session, webhook_id: str) -> None:
    """It gets nothing more: what was still to be sent fails (its deliveries stay listed)."""
    get_webhook(s, webhook_id).deleted_at = utcnow()
    s.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.status == PENDING)
        .values(status=FAILED, claim=None, next_attempt_at=None, last_error="webhook deleted")
        .execution_options(synchronize_session=False)
    )


def list_deliveries(
    s: Session, webhook_id: str, *, limit: int, cursor: str | None
) -> tuple[list[WebhookDelivery], str | None]:
    get_webhook(s, webhook_id)
    mine = WebhookDelivery.webhook_id == webhook_id
    return paging.newest_first(s, WebhookDelivery, mine, limit=limit, cursor=cursor)


def retry(s: Session, webhook_id: str, delivery_id: str) -> WebhookDelivery:
    """A delivery that ended (failed, or succeeded) is due again, at once; one that failed
    gets one more attempt (or the rest of its schedule, if attempts were left)."""
    get_webhook(s, webhook_id)
    delivery = get_or_404(s, WebhookDelivery, "delivery", delivery_id)
    if delivery.webhook_id != webhook_id:
        raise NotFound("delivery", delivery_id)
    if delivery.status == PENDING:
        raise Conflict(f"delivery {delivery_id!r} is still being sent", code="delivery_pending")
    delivery.status, delivery.next_attempt_at, delivery.claim = PENDING, utcnow(), None
    s.flush()
    return delivery


# -- the outbox ----------------------------------------------------------------------------


def event_type(type_: str, data: dict[str, Any]) -> str | None:
    """The webhook event a job event is, if any."""
    if type_ == "metrics":
        return "job.epoch"
    name = f"job.{data.get('status')}"
    return name if type_ == "status" and name in DEFAULT_EVENTS else None


def on_job_event(s: Session, job_id: str, type_: str, data: dict[str, Any]) -> None:
    """Adds, in the job event's transaction, a delivery of it to each webhook of the job's
    project that subscribed to it (service/jobs/lifecycle.py add_event calls it)."""
    event = event_type(type_, data)
    if event is None:
        return
    live = (
        select(Webhook)
        .join(Job, Job.project_id == Webhook.project_id)
        .where(Job.id == job_id, Webhook.deleted_at.is_(None))
    )
    hooks = [h for h in s.scalars(live) if event in h.events]
    if not hooks:
        return
    # populate_existing: transitions are UPDATEs that leave a job already loaded as it was
    job = s.scalars(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).one()
    now = utcnow()
    payload = {"type": event, "timestamp": iso(now), "data": job_data(job, event, data)}
    s.add_all(
        WebhookDelivery(
            id=new_id("msg"),
            webhook_id=hook.id,
            project_id=job.project_id,
            job_id=job_id,
            event=event,
            payload=payload,
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
        )
        for hook in hooks
    )


def job_data(job: Job, event: str, data: dict[str, Any]) -> dict[str, Any]:
    """The payload's `data`: the job as GET /v1/jobs/{id} summarises it; for job.epoch, that
    epoch's metrics event too (a later attempt's for the same epoch replaces it)."""
    out = {
        "id": job.id,
        "object": "job",
        "name": job.name,
        "status": job.status,
        "method": job.method,
        "attempt": job.attempt,
        "progress": job.progress,
        "metrics": job.metrics,
        "result": job.result,
        "error": job.error,
        "finished_at": iso(job.finished_at) if job.finished_at else None,
    }
    return out | ({"epoch": data} if event == "job.epoch" else {})


def iso(moment: datetime) -> str:
    return moment.isoformat() + "Z"  # stored as naive UTC


# -- the sender ----------------------------------------------------------------------------


@dataclass
class Due:
    """A claimed delivery: what sending it needs."""

    id: str
    url: str
    secret: str
    body: str
    attempts: int
    claim: str


def claim_due(limit: int, lease_s: float) -> list[Due]:
    """Up to `limit` due deliveries, now this pass's for `lease_s` seconds."""
    now, token = utcnow(), uuid.uuid4().hex
    due = [WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now]
    with session_scope() as s:
        ids = s.scalars(
            select(WebhookDelivery.id)
            .where(*due)
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite runs one writer at a time
        ).all()
        if not ids:
            return []
        s.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids), *due)
            .values(claim=token, next_attempt_at=now + timedelta(seconds=lease_s))
            .execution_options(synchronize_session=False)
        )
        rows = s.execute(
            select(WebhookDelivery, Webhook.url, Webhook.secret)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(WebhookDelivery.claim == token)
        )
        return [
            Due(d.id, url, secret, json.dumps(d.payload, separators=(",", ":")), d.attempts, token)
            for d, url, secret in rows
        ]


def record(due: Due, status_code: int | None, error: str | None, settings: Settings) -> str:
    """The outcome of one attempt, if this pass still holds the claim; returns the status."""
    now, attempts = utcnow(), due.attempts + 1
    values: dict[str, Any]
    if status_code is not None and 200 <= status_code < 300:
        values = {"status": SUCCEEDED, "delivered_at": now, "next_attempt_at": None}
    elif attempts >= settings.webhook_max_attempts:
        values = {"status": FAILED, "next_attempt_at": None}
    else:
        wait = retry_wait(attempts, settings.webhook_retry_s)
        values = {"status": PENDING, "next_attempt_at": now + timedelta(seconds=wait)}
    with session_scope() as s:
        s.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == due.id, WebhookDelivery.claim == due.claim)
            .values(
                attempts=attempts,
                last_status_code=status_code,
                last_error=error,
                claim=None,
                **values,
            )
            .execution_options(synchronize_session=False)
        )
    return str(values["status"])


def retry_wait(attempts: int, schedule: list[float]) -> float:
    """Seconds from failed attempt number `attempts` to the next (the last wait repeats)."""
    return schedule[min(attempts, len(schedule)) - 1] if schedule else 0.0


async def post(
    http: httpx.AsyncClient, due: Due, timeout_s: float
) -> tuple[int | None, str | None]:
    """One attempt: the receiver's status code, and what went wrong (None on a 2xx)."""
    timestamp = str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "webhook-id": due.id,
        "webhook-timestamp": timestamp,
        "webhook-signature": sign(due.secret, due.id, timestamp, due.body),
    }
    try:
        async with asyncio.timeout(timeout_s):  # the whole exchange, a trickling answer too
            # streamed and never read: a receiver's answer is its status code
            async with http.stream("POST", due.url, content=due.body, headers=headers) as r:
                code = r.status_code
    except (TimeoutError, httpx.TimeoutException):
        return None, f"no answer within {timeout_s:g} s"
    except Exception as exc:  # any failure to deliver is that attempt's outcome
        return None, (f"{type(exc).__name__}: {exc}".rstrip(": "))[:MAX_ERROR]
    return code, None if 200 <= code < 300 else f"HTTP {code}"


async def deliver(http: httpx.AsyncClient, due: Due, settings: Settings) -> None:
    code, error = await post(http, due, settings.webhook_timeout_s)
    try:
        await asyncio.to_thread(record, due, code, error, settings)
    except Exception:  # the claim expires and the next pass sends it again
        log.exception("recording webhook delivery %s failed", due.id)


def client(settings: Settings) -> httpx.AsyncClient:
    # no redirects: a receiver answers where it was registered
    return httpx.AsyncClient(follow_redirects=False, timeout=settings.webhook_timeout_s)


def lease_s(settings: Settings) -> float:
    return settings.webhook_timeout_s + LEASE_MARGIN_S


async def send_once(settings: Settings) -> int:
    """One pass: claims what is due (at most `webhook_concurrency`), sends it all and
    records the answers. Returns how many it sent."""
    due = await asyncio.to_thread(claim_due, settings.webhook_concurrency, lease_s(settings))
    async with client(settings) as http:
        await asyncio.gather(*(deliver(http, d, settings) for d in due))
    return len(due)


async def run_sender(settings: Settings) -> None:
    """The API lifespan's sender: every `webhook_s` it claims what is due, up to
    `webhook_concurrency` deliveries in flight, so a slow receiver holds one slot for at
    most `webhook_timeout_s` and never the others."""
    sending: set[asyncio.Task[None]] = set()
    try:
        async with client(settings) as http:
            while True:
                free = settings.webhook_concurrency - len(sending)
                for due in await _claim(free, lease_s(settings)):
                    task = asyncio.create_task(deliver(http, due, settings))
                    sending.add(task)
                    task.add_done_callback(sending.discard)
                await asyncio.sleep(settings.webhook_s)
    finally:
        for task in sending:  # their claims expire and another pass sends them
            task.cancel()


async def _claim(limit: int, lease: float) -> list[Due]:
    if limit <= 0:
        return []
    try:
        return await asyncio.to_thread(claim_due, limit, lease)
    except Exception:  # a DB blip must not end the sender; the next pass claims again
        log.exception("claiming webhook deliveries failed")
        return []
