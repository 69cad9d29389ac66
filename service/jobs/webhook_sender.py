"""The webhook sender, run by every API process (its lifespan, beside the watchdog). Each pass
claims due deliveries with conditional UPDATEs (rows locked SKIP LOCKED on PostgreSQL), so two
processes never send one at once, taking turns across webhooks (round robin, failing ones after
healthy ones and in at most half the slots): at most `webhook_concurrency` in flight per process,
`webhook_endpoint_concurrency` per webhook, each attempt within `webhook_connect_timeout_s` to
connect and `webhook_timeout_s` in all. A 2xx ends a delivery; anything else retries it on
`webhook_retry_s` until `webhook_max_attempts`. A webhook failing `webhook_pause_failures` times
in a row for `webhook_pause_s` is paused: one probe every `webhook_probe_s` until one answers."""

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from service.config import Settings
from service.db.sessions import session_scope
from service.db.tables import Webhook, WebhookDelivery, utcnow
from service.jobs.webhooks import FAILED, PAUSED, PENDING, RESUMED, SUCCEEDED, add_event, sign

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]  # naive UTC, as stored; tests pass their own
MAX_ERROR = 500  # characters of a failed attempt's error kept
LEASE_MARGIN_S = 60.0  # a claim outlives the POST by this much before another sender may


@dataclass
class Due:
    """A claimed delivery: what sending it needs."""

    id: str
    webhook_id: str
    url: str
    secret: str
    body: str
    attempts: int
    claim: str


# -- claiming, in turns --------------------------------------------------------------------


def due_now(now: datetime) -> tuple[Any, ...]:
    return WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now


def in_flight(s: Session, now: datetime) -> tuple[Counter[str], int]:
    """Deliveries claimed and not yet answered (every sender's), per webhook, and how many
    of them are to failing webhooks."""
    rows = s.execute(
        select(WebhookDelivery.webhook_id, Webhook.consecutive_failures, func.count())
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at > now)
        .where(WebhookDelivery.claim.is_not(None))
        .group_by(WebhookDelivery.webhook_id, Webhook.consecutive_failures)
    )
    busy, failing_busy = Counter[str](), 0
    for webhook_id, failures, n in rows:
        busy[webhook_id] += n
        failing_busy += n if failures else 0
    return busy, failing_busy


def waiting(s: Session, now: datetime) -> Counter[str]:
    """Due deliveries per webhook."""
    rows = s.execute(
        select(WebhookDelivery.webhook_id, func.count())
        .where(*due_now(now))
        .group_by(WebhookDelivery.webhook_id)
    )
    return Counter({webhook_id: n for webhook_id, n in rows})


def turns(s: Session, ids: list[str], now: datetime, limit: int) -> list[Webhook]:
    """The webhooks that may be sent to now, in turn: healthy before failing, then the one
    served longest ago first; locked (SKIP LOCKED) for this pass on PostgreSQL."""
    return list(
        s.scalars(
            select(Webhook)
            .where(Webhook.id.in_(ids), Webhook.deleted_at.is_(None))
            .where(or_(Webhook.paused_at.is_(None), Webhook.next_probe_at <= now))
            .order_by(
                Webhook.consecutive_failures > 0,  # healthy first
                Webhook.last_turn_at.asc().nulls_first(),
                Webhook.id,
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def share(hooks: list[Webhook], room: dict[str, int], free: int, failing_free: int) -> Counter[str]:
    """Slots per webhook: one each in turn, round after round, while slots and room last;
    failing webhooks take at most `failing_free` of them."""
    plan: Counter[str] = Counter()
    while free > 0:
        before = free
        for hook in hooks:
            if free == 0 or room[hook.id] <= plan[hook.id] or (failing(hook) and failing_free <= 0):
                continue
            plan[hook.id] += 1
            free -= 1
            failing_free -= failing(hook)
        if free == before:
            break
    return plan


def plan_turns(s: Session, free: int, now: datetime, settings: Settings) -> Counter[str]:
    """How many deliveries to claim of each webhook this pass."""
    (busy, failing_busy), due = in_flight(s, now), waiting(s, now)
    if not due:
        return Counter()
    hooks = turns(s, list(due), now, free + len(busy))
    room = {h.id: min(due[h.id], cap(h, settings) - busy[h.id]) for h in hooks}
    failing_free = max(1, settings.webhook_concurrency // 2) - failing_busy
    return share(hooks, room, free, failing_free)


def failing(hook: Webhook) -> bool:
    return hook.consecutive_failures > 0


def cap(hook: Webhook, settings: Settings) -> int:
    """A paused webhook gets one probe at a time."""
    return 1 if hook.paused_at is not None else settings.webhook_endpoint_concurrency


def claim_due(free: int, lease_s: float, settings: Settings, now: datetime) -> list[Due]:
    """Up to `free` due deliveries, in turns across webhooks, this pass's for `lease_s`."""
    token = uuid.uuid4().hex
    with session_scope() as s:
        plan = plan_turns(s, free, now, settings)
        ids = [i for webhook_id, n in plan.items() for i in oldest(s, webhook_id, n, now)]
        if not ids:
            return []
        s.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(ids), *due_now(now))
            .values(
                claim=token,
                next_attempt_at=now + timedelta(seconds=lease_s),
                first_attempt_at=func.coalesce(WebhookDelivery.first_attempt_at, now),
            )
            .execution_options(synchronize_session=False)
        )
        s.execute(
            update(Webhook)
            .where(Webhook.id.in_(list(plan)))
            .values(last_turn_at=now)
            .execution_options(synchronize_session=False)
        )
        return claimed(s, token)


def oldest(s: Session, webhook_id: str, n: int, now: datetime) -> list[str]:
    return list(
        s.scalars(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.webhook_id == webhook_id, *due_now(now))
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
            .limit(n)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite runs one writer at a time
        )
    )


def claimed(s: Session, token: str) -> list[Due]:
    rows = s.execute(
        select(WebhookDelivery, Webhook.url, Webhook.secret)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.claim == token)
    )
    return [
        Due(d.id, d.webhook_id, url, secret, compact(d.payload), d.attempts, token)
        for d, url, secret in rows
    ]


def compact(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))


# -- recording -----------------------------------------------------------------------------


def outcome(ok: bool, attempts: int, settings: Settings, now: datetime) -> dict[str, Any]:
    """A delivery's new status and due time after attempt number `attempts`."""
    if ok:
        return {"status": SUCCEEDED, "delivered_at": now, "next_attempt_at": None}
    if attempts >= settings.webhook_max_attempts:
        return {"status": FAILED, "next_attempt_at": None}
    wait = retry_wait(attempts, settings.webhook_retry_s)
    return {"status": PENDING, "next_attempt_at": now + timedelta(seconds=wait)}


def record(due: Due, code: int | None, error: str | None, settings: Settings, now: datetime) -> str:
    """The outcome of one attempt, if this pass still holds the claim, and the webhook's
    health after it; returns the delivery's status."""
    ok = code is not None and 200 <= code < 300
    values = outcome(ok, due.attempts + 1, settings, now)
    with session_scope() as s:
        held = s.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == due.id, WebhookDelivery.claim == due.claim)
            .values(
                attempts=due.attempts + 1,
                last_status_code=code,
                last_error=error,
                claim=None,
                **values,
            )
            .execution_options(synchronize_session=False)
        )
        if held.rowcount and ok:  # type: ignore[attr-defined]
            answered(s, due.webhook_id, now)
        elif held.rowcount:  # type: ignore[attr-defined]
            missed(s, due.webhook_id, str(error), settings, now)
    return str(values["status"])


def answered(s: Session, webhook_id: str, now: datetime) -> None:
    """Its receiver answered: healthy again, and resumed if it was paused."""
    hook = Webhook.id == webhook_id
    resumed = s.execute(
        update(Webhook)
        .where(hook, Webhook.paused_at.is_not(None))
        .values(paused_at=None, next_probe_at=None)
        .execution_options(synchronize_session=False)
    )
    s.execute(
        update(Webhook)
        .where(hook, Webhook.consecutive_failures > 0)
        .values(consecutive_failures=0, failing_since=None)
        .execution_options(synchronize_session=False)
    )
    if resumed.rowcount:  # type: ignore[attr-defined]
        add_event(s, s.get_one(Webhook, webhook_id), RESUMED, "a probe was answered", now)


def missed(s: Session, webhook_id: str, error: str, settings: Settings, now: datetime) -> None:
    """One more failure in a row: paused once there are enough of them for long enough; a
    paused webhook's next probe is due a probe interval from now."""
    hook, probe_at = Webhook.id == webhook_id, now + timedelta(seconds=settings.webhook_probe_s)
    s.execute(
        update(Webhook)
        .where(hook)
        .values(
            consecutive_failures=Webhook.consecutive_failures + 1,
            failing_since=func.coalesce(Webhook.failing_since, now),
        )
        .execution_options(synchronize_session=False)
    )
    paused = s.execute(
        update(Webhook)
        .where(hook, Webhook.paused_at.is_(None))
        .where(Webhook.consecutive_failures >= settings.webhook_pause_failures)
        .where(Webhook.failing_since <= now - timedelta(seconds=settings.webhook_pause_s))
        .values(paused_at=now, next_probe_at=probe_at)
        .execution_options(synchronize_session=False)
    )
    if paused.rowcount:  # type: ignore[attr-defined]
        row = s.get_one(Webhook, webhook_id)
        why = f"{row.consecutive_failures} attempts in a row failed since {row.failing_since}"
        add_event(s, row, PAUSED, f"{why}; the last: {error}"[:MAX_ERROR], now)
        return
    s.execute(
        update(Webhook)
        .where(hook, Webhook.paused_at.is_not(None))
        .values(next_probe_at=probe_at)
        .execution_options(synchronize_session=False)
    )


def retry_wait(attempts: int, schedule: list[float]) -> float:
    """Seconds from failed attempt number `attempts` to the next (the last wait repeats)."""
    return schedule[min(attempts, len(schedule)) - 1] if schedule else 0.0


# -- sending -------------------------------------------------------------------------------


async def post(
    http: httpx.AsyncClient, due: Due, settings: Settings
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
        async with asyncio.timeout(settings.webhook_timeout_s):  # a trickling answer too
            # streamed and never read: a receiver's answer is its status code
            async with http.stream("POST", due.url, content=due.body, headers=headers) as r:
                code = r.status_code
    except httpx.ConnectTimeout:
        return None, f"no connection within {settings.webhook_connect_timeout_s:g} s"
    except (TimeoutError, httpx.TimeoutException):
        return None, f"no answer within {settings.webhook_timeout_s:g} s"
    except Exception as exc:  # any failure to deliver is that attempt's outcome
        return None, (f"{type(exc).__name__}: {exc}".rstrip(": "))[:MAX_ERROR]
    return code, None if 200 <= code < 300 else f"HTTP {code}"


async def deliver(http: httpx.AsyncClient, due: Due, settings: Settings, clock: Clock) -> None:
    code, error = await post(http, due, settings)
    try:
        await asyncio.to_thread(record, due, code, error, settings, clock())
    except Exception:  # the claim expires and the next pass sends it again
        log.exception("recording webhook delivery %s failed", due.id)


def client(settings: Settings) -> httpx.AsyncClient:
    # no redirects: a receiver answers where it was registered
    timeout = httpx.Timeout(settings.webhook_timeout_s, connect=settings.webhook_connect_timeout_s)
    return httpx.AsyncClient(follow_redirects=False, timeout=timeout)


def lease_s(settings: Settings) -> float:
    return settings.webhook_timeout_s + LEASE_MARGIN_S


async def send_once(settings: Settings, clock: Clock = utcnow) -> int:
    """One pass: claims what is due (at most `webhook_concurrency`), sends it all and
    records the answers. Returns how many it sent."""
    due = await claim(settings.webhook_concurrency, settings, clock)
    async with client(settings) as http:
        await asyncio.gather(*(deliver(http, d, settings, clock) for d in due))
    return len(due)


async def run_sender(settings: Settings, clock: Clock = utcnow) -> None:
    """The API lifespan's sender: every `webhook_s` it claims what is due into its free
    slots, so a dead receiver holds at most its own slots, each for at most the timeout."""
    sending: set[asyncio.Task[None]] = set()
    try:
        async with client(settings) as http:
            while True:
                free = settings.webhook_concurrency - len(sending)
                for due in await claim(free, settings, clock):
                    task = asyncio.create_task(deliver(http, due, settings, clock))
                    sending.add(task)
                    task.add_done_callback(sending.discard)
                await asyncio.sleep(settings.webhook_s)
    finally:
        for task in sending:  # their claims expire and another pass sends them
            task.cancel()


async def claim(free: int, settings: Settings, clock: Clock) -> list[Due]:
    if free <= 0:
        return []
    try:
        return await asyncio.to_thread(claim_due, free, lease_s(settings), settings, clock())
    except Exception:  # a DB blip must not end the sender; the next pass claims again
        log.exception("claiming webhook deliveries failed")
        return []
