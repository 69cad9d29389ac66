"""create_app(): the FastAPI factory and its lifespan (the watchdog, sweep driver and webhook
loops)."""

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI

from service import keys, logs
from service.api import artifacts, dashboard, health, problems, schemas
from service.api import datasets as datasets_api
from service.api import jobs as jobs_api
from service.api import models as models_api
from service.api import recipes as recipes_api
from service.api import sweeps as sweeps_api
from service.api import webhooks as webhooks_api
from service.api import workers as workers_api
from service.api.deps import json_body
from service.api.middleware import BodySizeLimit, JsonDepthLimit
from service.config import Settings, get_settings
from service.jobs import watchdog, webhook_sender
from service.metrics import ObserveRequests
from service.spec import uris
from service.sweeps import driver

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    loops = []
    if settings.watchdog_s > 0:  # the sweep driver beside it, on its clock: both conditional
        loops = [watchdog.run_loop(settings), driver.run_loop(settings)]
    if settings.webhook_s > 0:  # webhooks are sent from here, by every API process
        loops.append(webhook_sender.run_sender(settings))
    tasks = [asyncio.create_task(loop) for loop in loops]
    # what start-up made lives as long as the process: out of the collector's sight, a full
    # collection does not stop every request in flight to scan it all (README: API under load)
    gc.freeze()
    yield
    gc.unfreeze()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logs.configure(settings)
    uris.allow_list(settings.data_uris)  # a bad DISTILLERY_DATA_URIS stops the start-up
    if not settings.require_keys:
        log.warning(
            "API KEYS ARE OFF: a request without a key acts for the default project. Anyone "
            "who can reach %s:%s can read and cancel its jobs. Set DISTILLERY_REQUIRE_KEYS=true "
            "and make keys with `distillery keys create --project NAME` (production must).",
            settings.host,
            settings.port,
        )
    app = FastAPI(
        title="Distillery",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # service/api/dashboard.py serves /docs and /redoc from local assets
        redoc_url=None,
        description="Knowledge distillation as a service.",
        dependencies=[Depends(json_body)],
    )
    app.state.settings = settings
    app.state.known_keys = keys.KnownKeys(settings.key_cache_s)
    app.add_middleware(JsonDepthLimit)  # inside BodySizeLimit: it reads what that counts
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        upload_bytes=settings.max_upload_bytes,
        upload_paths=("/v1/models", "/v1/datasets"),
    )
    # outermost: times every request and gives it its request id (service/metrics.py)
    app.add_middleware(ObserveRequests, access_log=settings.log_format == "json")
    problems.install(app)
    routers = (
        jobs_api,
        artifacts,
        models_api,
        datasets_api,
        webhooks_api,
        workers_api,
        recipes_api,
        sweeps_api,
        health,
    )
    for module in routers:
        app.include_router(module.router, responses=schemas.problems(500))
    dashboard.install(app)
    schemas.document_problems(app)
    return app
