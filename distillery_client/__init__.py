"""A typed client for the Distillery API (httpx; no torch, no server code):

from distillery_client import Client

with Client() as api:  # $DISTILLERY_URL, $DISTILLERY_API_KEY
    job = api.create_job(spec)
    for event in (watch := api.wait(job.id)):
        print(event.type, event.data)
    print(watch.job.status)
"""

from distillery_client.client import DEFAULT_URL, Client, ConnectionFailed, Watch
from distillery_client.errors import (
    ApiError,
    BadRequest,
    ChecksumMismatch,
    Conflict,
    DistilleryClientError,
    Forbidden,
    InvalidRequest,
    NotFound,
    RangeNotSatisfiable,
    RateLimited,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from distillery_client.models import (
    TERMINAL,
    Artifact,
    ArtifactList,
    Dataset,
    DatasetList,
    Delivery,
    DeliveryList,
    Event,
    EventList,
    Job,
    JobList,
    Model,
    ModelList,
    Problem,
    ProblemField,
    Readiness,
    Sweep,
    SweepList,
    SweepSummary,
    Webhook,
    WebhookCreated,
    WebhookList,
)

__all__ = [
    "DEFAULT_URL",
    "TERMINAL",
    "ApiError",
    "Artifact",
    "ArtifactList",
    "BadRequest",
    "ChecksumMismatch",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Dataset",
    "DatasetList",
    "Delivery",
    "DeliveryList",
    "DistilleryClientError",
    "Event",
    "EventList",
    "Forbidden",
    "InvalidRequest",
    "Job",
    "JobList",
    "Model",
    "ModelList",
    "NotFound",
    "Problem",
    "ProblemField",
    "RangeNotSatisfiable",
    "RateLimited",
    "Readiness",
    "ServerError",
    "Sweep",
    "SweepList",
    "SweepSummary",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "Watch",
    "Webhook",
    "WebhookCreated",
    "WebhookList",
]
