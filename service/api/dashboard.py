"""The dashboard at / and the API docs at /docs and /redoc, every asset served by the API
itself: the dashboard's from service/dashboard/, Swagger UI's and ReDoc's from the
fastapi-offline package. Nothing comes from a CDN, so both work with no internet.

None of it is under /v1 or needs a key (the page holds no data: it asks /v1 for it with the
key its user types), and none of it is in the OpenAPI document."""

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parents[1] / "dashboard"  # index.html, app.js, style.css
DOCS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
UI_URL = "/ui"
DOCS_ASSETS_URL = "/docs-assets"
FAVICON = f"{DOCS_ASSETS_URL}/favicon.png"

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard() -> FileResponse:
    return FileResponse(UI_DIR / "index.html")


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    app = request.app
    return get_swagger_ui_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=FAVICON,
        oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
        # Swagger UI's default badge asks validator.swagger.io about the document
        swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
    )


@router.get("/docs/oauth2-redirect")
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    app = request.app
    page = get_redoc_html(
        openapi_url=app.openapi_url,
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=FAVICON,
        with_google_fonts=False,
    )
    # ReDoc's sidebar hot-links its vendor's logo from a CDN: no image from elsewhere
    page.headers["Content-Security-Policy"] = "img-src 'self' data:"
    return page


def install(app: FastAPI) -> None:
    """Adds the pages and mounts their assets. The app is made with docs_url=None and
    redoc_url=None, so FastAPI's own CDN-backed pages are not there."""
    app.include_router(router)
    app.mount(UI_URL, StaticFiles(directory=UI_DIR), name="ui")
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_DIR), name="docs-assets")
