"""Projects and their API keys.

A key is `dk_<key id hex>_<secret>`: the id finds its row, and only the secret's sha256 is
stored, compared in constant time. The secret is shown once, when the key is made
(`distillery keys create`). A revoked key stays listed, and is refused with 403."""

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cachetools import TTLCache
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import DEFAULT_PROJECT, ApiKey, Project, new_id, utcnow
from service.errors import DistilleryError

PREFIX = "dk_"
KEY_ID = "key_"


@dataclass(frozen=True)
class Caller:
    """Who a request acts for: its project, and the key it came with (None: no keys)."""

    project_id: str
    key_id: str | None = None


KEYLESS = Caller(DEFAULT_PROJECT)


class Unauthorized(DistilleryError):
    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            status=401,
            code="unauthorized",
            title="Unauthorized",
            headers={"WWW-Authenticate": "Bearer"},
        )


class Forbidden(DistilleryError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status=403, code="key_revoked", title="Forbidden")


def project_named(s: Session, name: str) -> Project:
    """The project called `name`, made on first use."""
    row = s.scalar(select(Project).where(Project.name == name))
    if row is None:
        row = Project(id=DEFAULT_PROJECT if name == "default" else new_id("prj"), name=name)
        s.add(row)
        s.flush()
    return row


def create_key(s: Session, project: str, name: str) -> tuple[ApiKey, str]:
    """A new key of `project` (by name, made if new), and its plaintext: shown only now."""
    secret = secrets.token_urlsafe(32)
    row = ApiKey(
        id=new_id("key"),
        project_id=project_named(s, project).id,
        name=name,
        secret_sha256=digest(secret),
    )
    s.add(row)
    s.flush()
    return row, f"{PREFIX}{row.id.removeprefix(KEY_ID)}_{secret}"


def list_keys(s: Session) -> list[tuple[ApiKey, str]]:
    """Every key with its project's name, oldest first."""
    rows = s.execute(
        select(ApiKey, Project.name)
        .join(Project, Project.id == ApiKey.project_id)
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    return [(key, name) for key, name in rows]


def revoke(s: Session, key_id: str) -> ApiKey | None:
    row = s.get(ApiKey, key_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def any_active(s: Session) -> bool:
    return s.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None


def authenticate(s: Session, authorization: str | None, required: bool) -> Caller:
    """The caller an `Authorization: Bearer <key>` header names. Without one: 401 when keys
    are required, else the default project (the keyless embedded API)."""
    if not authorization:
        if required:
            raise Unauthorized("an API key is required: Authorization: Bearer <key>")
        return KEYLESS
    scheme, _, token = authorization.partition(" ")
    key_hex, _, secret = token.strip().removeprefix(PREFIX).partition("_")
    if scheme.lower() != "bearer" or not token.startswith(PREFIX) or not secret:
        raise Unauthorized("malformed API key: Authorization: Bearer dk_...")
    row = s.get(ApiKey, KEY_ID + key_hex)
    # the digest is compared even for an unknown id: the time says nothing of which ids exist
    stored = row.secret_sha256 if row is not None else "0" * 64
    if not hmac.compare_digest(stored, digest(secret)) or row is None:
        raise Unauthorized("unknown API key")
    if row.revoked_at is not None:
        raise Forbidden(f"API key {row.id} was revoked")
    return Caller(row.project_id, row.id)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KnownKeys:
    """Callers an API process found valid recently, by their header's sha256, for `ttl_s`
    (0: none kept); used from the event loop's thread only. A refusal is never kept."""

    def __init__(self, ttl_s: float, size: int = 10_000) -> None:
        self.cache: TTLCache[str, Caller] | None = TTLCache(size, ttl_s) if ttl_s else None

    def get(self, header: str | None) -> Caller | None:
        if self.cache is None or not header:
            return None
        return self.cache.get(digest(header))

    def add(self, header: str | None, who: Caller) -> None:
        if self.cache is not None and header and who.key_id is not None:
            self.cache[digest(header)] = who
