"""Data URIs: data and models already in an object store, registered where they are
(POST /v1/datasets and /v1/models with {"uri": ...}), and the prefixes a deployment allows
(DISTILLERY_DATA_URIS). Only `s3://bucket/key` (any S3-compatible store, reached with the
deployment's endpoint and credentials): no other scheme, no credentials, query, fragment or
percent-escapes, no empty, `.` or `..` segment, so a URI names one place, spelt one way."""

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from service.spec.names import Strict

SCHEME = "s3://"
MAX_LENGTH = 1024  # S3's longest key, and the column's width
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's bucket names
FORBIDDEN = set("@?#%\\") | {chr(c) for c in range(32)} | {"\x7f"}


def parse(uri: str) -> tuple[str, str]:
    """(bucket, key) of `uri`, the key without a leading slash ("" for the bucket's root);
    ValueError saying what is wrong."""
    if not uri.startswith(SCHEME):
        raise ValueError(f"must start with {SCHEME} (no other scheme is read)")
    if bad := sorted(FORBIDDEN & set(uri)):
        raise ValueError(f"must not hold {bad!r}: credentials are the deployment's own")
    bucket, _, key = uri.removeprefix(SCHEME).partition("/")
    if not BUCKET.fullmatch(bucket):
        raise ValueError(f"{bucket!r} is not an S3 bucket name")
    segments = key.split("/")
    if any(s in ("", ".", "..") for s in segments[:-1]) or segments[-1] in (".", ".."):
        raise ValueError("no empty, '.' or '..' path segment")
    return bucket, key


def check(uri: str) -> str:
    parse(uri)
    return uri


def folder(uri: str) -> str:
    """`uri` as a prefix: ending in one slash."""
    return uri if uri.endswith("/") else uri + "/"


def is_under(uri: str, prefix: str) -> bool:
    """Whether `uri` is `prefix` as a folder or lies under it, segment by segment
    (s3://b/data/ does not hold s3://b/database/x)."""
    return uri.startswith(folder(prefix))


def allow_list(setting: str) -> dict[str, list[str]]:
    """DISTILLERY_DATA_URIS read: {project name: its prefixes}, "" for the prefixes every
    project may read. Entries are comma separated, each `s3://...` or `name=s3://...` (a
    project's name holds no `=`; a key may)."""
    found: dict[str, list[str]] = {}
    for entry in filter(None, (e.strip() for e in setting.split(","))):
        project, _, prefix = ("", "", entry) if entry.startswith(SCHEME) else entry.partition("=")
        try:
            if not entry.startswith(SCHEME) and not project.strip():
                raise ValueError("a project's prefix is name=s3://...")
            found.setdefault(project.strip(), []).append(folder(check(prefix.strip())))
        except ValueError as exc:
            raise ValueError(f"DISTILLERY_DATA_URIS entry {entry!r}: {exc}") from exc
    return found


def allowed(setting: str, project: str) -> list[str]:
    """The prefixes project `project` (its name) may register data and models from."""
    found = allow_list(setting)
    return found.get("", []) + (found.get(project, []) if project else [])


# one short of the column: a folder's URI gains its closing slash
DataUri = Annotated[
    str, Field(min_length=len(SCHEME) + 3, max_length=MAX_LENGTH - 1), AfterValidator(check)
]


class DatasetFromUri(Strict):
    """POST /v1/datasets with JSON: register image data already in an object store."""

    name: str = Field("", max_length=200)
    uri: DataUri = Field(description="s3://bucket/prefix/: the folder the data lies in")
    format: Literal["imagefolder", "webdataset"] = Field(
        description="imagefolder: <class>/<image> (or under train/ and val/), packed into "
        "the store's shards; webdataset: .tar shards of <key>.jpg|png|... + <key>.cls, read "
        "where they are"
    )
    class_names: list[str] | None = Field(
        None, max_length=100_000, description="webdataset: the name of each label, in order"
    )

    @model_validator(mode="after")
    def _names_are_webdatasets(self) -> "DatasetFromUri":
        if self.class_names is not None and self.format != "webdataset":
            raise ValueError("class_names are for webdataset; an imagefolder names its own")
        return self
