"""Webhook routes: register a URL for the project's job events, list, show, resume and delete
webhooks, and list a webhook's deliveries and events (service/jobs/webhook_sender.py sends)."""

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from service.api.deps import AUTHENTICATED, DB, JSON_BODY, KEYED, Cursor, Limit
from service.api.schemas import (
    DeliveryList,
    DeliveryOut,
    WebhookCreated,
    WebhookEventList,
    WebhookEventOut,
    WebhookList,
    WebhookOut,
    problems,
)
from service.jobs import webhooks
from service.spec.limits import Ident

router = APIRouter(
    prefix="/v1/webhooks", tags=["webhooks"], dependencies=AUTHENTICATED, responses=KEYED
)
Event = Literal[webhooks.EVENTS]  # type: ignore[valid-type]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(description="http(s); POSTed each event the webhook subscribes to")
    events: list[Event] = Field(
        list(webhooks.DEFAULT_EVENTS),
        min_length=1,
        max_length=len(webhooks.EVENTS),
        description="job.epoch: each epoch's metrics, besides the terminal states",
    )


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreated,
    responses=problems(400, 413, 422) | JSON_BODY,
)
def create_webhook(s: DB, body: WebhookIn, response: Response) -> WebhookCreated:
    """The answer holds the webhook's signing secret: it is not shown again."""
    hook = webhooks.register(s, str(body.url), body.events)
    response.headers["Location"] = f"/v1/webhooks/{hook.id}"
    return WebhookCreated.model_validate(hook)


@router.get("", response_model=WebhookList, responses=problems(422))
def list_webhooks(s: DB, limit: Limit = 50, cursor: Cursor = None) -> WebhookList:
    page, next_cursor = webhooks.list_webhooks(s, limit=limit, cursor=cursor)
    return WebhookList(data=[WebhookOut.model_validate(h) for h in page], next_cursor=next_cursor)


@router.get("/{webhook_id}", response_model=WebhookOut, responses=problems(404, 422))
def get_webhook(s: DB, webhook_id: Ident) -> WebhookOut:
    return WebhookOut.model_validate(webhooks.get_webhook(s, webhook_id))


@router.post("/{webhook_id}/resume", response_model=WebhookOut, responses=problems(404, 422))
def resume_webhook(s: DB, webhook_id: Ident) -> WebhookOut:
    """A paused webhook is sent to again now (an active one stays as it is)."""
    return WebhookOut.model_validate(webhooks.resume(s, webhook_id))


@router.get("/{webhook_id}/events", response_model=WebhookEventList, responses=problems(404, 422))
def list_events(
    s: DB, webhook_id: Ident, limit: Limit = 50, cursor: Cursor = None
) -> WebhookEventList:
    """Newest first: when it was paused (and why) and resumed."""
    page, next_cursor = webhooks.list_events(s, webhook_id, limit=limit, cursor=cursor)
    data = [WebhookEventOut.model_validate(e) for e in page]
    return WebhookEventList(data=data, next_cursor=next_cursor)


@router.delete("/{webhook_id}", status_code=204, responses=problems(404, 422))
def delete_webhook(s: DB, webhook_id: Ident) -> Response:
    """It gets nothing more; what it still had to be sent fails."""
    webhooks.delete(s, webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList, responses=problems(404, 422))
def list_deliveries(
    s: DB, webhook_id: Ident, limit: Limit = 50, cursor: Cursor = None
) -> DeliveryList:
    """Newest first, each with its attempts, the last answer's status code or error."""
    page, next_cursor = webhooks.list_deliveries(s, webhook_id, limit=limit, cursor=cursor)
    data = [DeliveryOut.model_validate(d) for d in page]
    return DeliveryList(data=data, next_cursor=next_cursor)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=DeliveryOut,
    responses=problems(404, 409, 422),
)
def retry_delivery(s: DB, webhook_id: Ident, delivery_id: Ident) -> DeliveryOut:
    """Sends a delivery that ended again, at once (409 while it is still being sent)."""
    return DeliveryOut.model_validate(webhooks.retry(s, webhook_id, delivery_id))
