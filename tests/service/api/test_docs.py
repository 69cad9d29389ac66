"""/docs, /redoc and the dashboard at / are served with every asset they reference from the
API itself (nothing from a CDN or a font host), with no key even when keys are required, and
stay out of the OpenAPI document. tests/e2e/test_dashboard.py renders them in a browser."""

from collections.abc import Iterator
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from service.api.dashboard import UI_DIR
from service.app import create_app
from service.config import Settings

PAGES = ("/docs", "/redoc", "/")
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class References(HTMLParser):
    """The URLs a page loads: script src, link href (stylesheet, icon)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href"}.get(tag)
        self.urls += [v for k, v in attrs if k == wanted and v and not v.startswith("data:")]


def references(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    return parser.urls


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """No database is needed: none of these routes reads one."""
    with TestClient(create_app(Settings(watchdog_s=0, require_keys=True))) as c:
        yield c


@pytest.mark.parametrize("page", PAGES)
def test_pages_load_only_their_own_assets_with_no_key(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "://" not in r.text  # no absolute URL: no CDN, no fonts, no validator badge
    urls = references(r.text)
    assert any(u.endswith(".js") for u in urls), urls
    for url in urls:
        assert url.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rfind(".") :]
        assert asset.headers["content-type"].startswith(TYPES[suffix]), (url, asset.headers)
        assert len(asset.content) > 100, url


def test_swagger_ui_reads_the_served_document(client: TestClient) -> None:
    html = client.get("/docs").text
    assert "url: '/openapi.json'" in html
    assert '"validatorUrl": null' in html
    assert client.get("/openapi.json").json()["paths"]
    assert client.get("/docs/oauth2-redirect").status_code == 200


def test_dashboard_code_names_no_other_host(client: TestClient) -> None:
    for name in ("app.js", "style.css"):
        text = client.get(f"/ui/{name}").text
        assert text == (UI_DIR / name).read_text()
        assert "://" not in text, name


def test_ui_routes_stay_out_of_the_openapi_document(client: TestClient) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    assert paths, "the document lists the API"
    assert not {p for p in paths if p in PAGES or p.startswith(("/ui", "/docs"))}, paths


def test_a_missing_asset_is_a_404_problem(client: TestClient) -> None:
    r = client.get("/ui/no-such-file.js")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


def test_redoc_forbids_images_from_elsewhere(client: TestClient) -> None:
    # ReDoc's sidebar hot-links its vendor's logo from a CDN
    assert client.get("/redoc").headers["content-security-policy"] == "img-src 'self' data:"
