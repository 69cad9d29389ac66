"""Webhooks: a project's URLs are POSTed its jobs' terminal states (and, when asked, each
epoch) as Standard Webhooks define them (a JSON body, `webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<HMAC-SHA256>` keyed with the webhook's `whsec_` secret).
An outbox: `on_job_event` adds deliveries in the transaction of the job event, so an event
is sent if and only if it happened; service/jobs/webhook_sender.py sends them. A webhook whose
receiver keeps failing is paused (`webhook.paused`) until a probe or `resume` finds it
answering (`webhook.resumed`). URLs are http(s) only; the API POSTs to whatever host a
project names (SSRF): route its egress through a proxy that lets only public addresses out."""

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db import paging
from service.db.sessions import get_or_404
from service.db.tables import Job, Webhook, WebhookDelivery, WebhookEvent, new_id, utcnow
from service.db.tenancy import current_project
from service.errors import Conflict, NotFound

# a job's terminal states (service/db/tables.py TERMINAL, tied by a test) and each
# epoch's metrics; a sweep's pruned trials only when asked for (a sweep prunes many)
EVENTS = ("job.succeeded", "job.failed", "job.cancelled", "job.epoch", "job.pruned")
DEFAULT_EVENTS = EVENTS[:3]
ENDINGS = (*DEFAULT_EVENTS, "job.pruned")
PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
PAUSED, RESUMED = "webhook.paused", "webhook.resumed"  # a webhook's own events
SECRET_PREFIX = "whsec_"


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


def resume(s: Session, webhook_id: str) -> Webhook:
    """A paused webhook is sent to again now, its failure count reset (an active one: no-op)."""
    hook = get_webhook(s, webhook_id)
    if hook.paused_at is not None:
        hook.paused_at = hook.next_probe_at = hook.failing_since = None
        hook.consecutive_failures = 0
        add_event(s, hook, RESUMED, "resumed on request", utcnow())
    s.flush()
    return hook


def add_event(s: Session, hook: Webhook, type_: str, message: str, at: datetime) -> None:
    s.add(
        WebhookEvent(
            id=new_id("whe"),
            webhook_id=hook.id,
            project_id=hook.project_id,
            type=type_,
            message=message,
            created_at=at,
        )
    )


def list_events(
    s: Session, webhook_id: str, *, limit: int, cursor: str | None
) -> tuple[list[WebhookEvent], str | None]:
    get_webhook(s, webhook_id)
    mine = WebhookEvent.webhook_id == webhook_id
    return paging.newest_first(s, WebhookEvent, mine, limit=limit, cursor=cursor)


# -- the outbox ----------------------------------------------------------------------------


def event_type(type_: str, data: dict[str, Any]) -> str | None:
    """The webhook event a job event is, if any."""
    if type_ == "metrics":
        return "job.epoch"
    name = f"job.{data.get('status')}"
    return name if type_ == "status" and name in ENDINGS else None


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
