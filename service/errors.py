"""One error family; the app turns each into an RFC 9457 problem+json response."""

from dataclasses import dataclass, field
from typing import Any, ClassVar

PROBLEM = "application/problem+json"


@dataclass
class FieldError:
    field: str
    message: str


@dataclass
class DistilleryError(Exception):
    detail: str
    errors: list[FieldError] = field(default_factory=list)
    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.detail + "".join(f"\n  {e.field}: {e.message}" for e in self.errors)

    def as_problem(self, instance: str) -> dict[str, Any]:
        """The RFC 9457 body; `instance` is the request's path."""
        body: dict[str, Any] = {
            "type": f"https://distillery.dev/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
            "code": self.code,
        }
        if self.errors:
            body["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return body


class NotFound(DistilleryError):
    def __init__(self, what: str, ident: str) -> None:
        super().__init__(
            f"{what} {ident!r} not found", status=404, code="not_found", title="Not found"
        )


class UnsupportedMediaType(DistilleryError):
    def __init__(self, content_type: str, wanted: str) -> None:
        super().__init__(
            f"Content-Type {content_type or 'none'!r}: {wanted}",
            status=415,
            code="unsupported_media_type",
            title="Unsupported media type",
        )


class Conflict(DistilleryError):
    def __init__(self, detail: str, code: str = "conflict") -> None:
        super().__init__(detail, status=409, code=code, title="Conflict")


class InvalidSpec(DistilleryError):
    def __init__(self, errors: list[FieldError]) -> None:
        fields = ", ".join(e.field for e in errors)
        super().__init__(
            f"invalid job spec: {fields}",
            errors,
            status=422,
            code="invalid_spec",
            title="Invalid job spec",
        )


class InvalidCursor(DistilleryError):
    def __init__(self) -> None:
        super().__init__(
            "cursor is not one a page of this list gave",
            [FieldError("cursor", "malformed cursor")],
            status=422,
            code="invalid_cursor",
            title="Invalid cursor",
        )


class MalformedJson(DistilleryError):
    def __init__(self) -> None:
        super().__init__(
            "request body is not valid JSON",
            [FieldError("body", "malformed")],
            status=400,
            code="malformed_json",
            title="Malformed JSON",
        )


class InvalidRequest(DistilleryError):
    def __init__(self, detail: str, errors: list[FieldError]) -> None:
        super().__init__(
            detail, errors, status=422, code="invalid_request", title="Invalid request"
        )


class HttpProblem(DistilleryError):
    """Starlette's own HTTP errors (an unknown path, a method a path does not answer)."""

    CODES: ClassVar[dict[int, str]] = {404: "not_found", 405: "method_not_allowed"}

    def __init__(self, status: int, detail: str, headers: dict[str, str]) -> None:
        code = self.CODES.get(status, "http_error")
        super().__init__(detail, status=status, code=code, title=detail, headers=headers)


class InternalError(DistilleryError):
    def __init__(self) -> None:
        super().__init__(
            "internal server error", status=500, code="internal", title="Internal server error"
        )


class BodyTooLarge(DistilleryError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"request body exceeds {limit} bytes",
            [FieldError("body", f"larger than {limit} bytes")],
            status=413,
            code="body_too_large",
            title="Request body too large",
        )


class JsonTooDeep(DistilleryError):
    def __init__(self, message: str) -> None:
        super().__init__(
            f"request body is {message}",
            [FieldError("body", message)],
            status=400,
            code="json_too_deep",
            title="JSON nested too deeply",
        )


class PickleRefused(DistilleryError):
    def __init__(self, filename: str) -> None:
        super().__init__(
            f"{filename!r} looks like a pickle file; upload safetensors "
            "(safetensors.torch.save_file(model.state_dict(), path))",
            [FieldError("filename", "pickle files (.pt/.pth/.pkl/.bin) are refused")],
            status=422,
            code="pickle_refused",
            title="Pickle refused",
        )


class BadJob(DistilleryError):
    """A job named as a model's source that cannot be one."""

    def __init__(self, message: str) -> None:
        super().__init__(
            message, [FieldError("job", message)], status=422, code="invalid_job", title="Bad job"
        )


class StoreUnavailable(DistilleryError):
    """The object store (DISTILLERY_STORE_URL) could not be reached or refused a request:
    nothing was changed; the same request may succeed later."""

    RETRY_AFTER_S = 30

    def __init__(self) -> None:
        super().__init__(
            "the object store could not be reached; nothing was changed, try again later",
            status=503,
            code="store_unavailable",
            title="Store unavailable",
            headers={"Retry-After": str(self.RETRY_AFTER_S)},
        )


@dataclass
class JobError(Exception):
    """Why a job failed, as its `error` column and events show it: a code to act on, a
    message, and whether running it again could succeed."""

    code: str
    message: str
    retryable: bool = False

    def __str__(self) -> str:
        return self.message

    def as_dict(self) -> dict[str, str | bool]:
        return {"code": self.code, "message": self.message, "retryable": self.retryable}
