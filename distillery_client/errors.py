"""The errors a call raises: the API's problem+json answers (RFC 9457) as `ApiError`
subclasses, one per status, carrying what the body says."""

from typing import Any

import httpx

from distillery_client.models import Problem, ProblemField


class DistilleryClientError(Exception):
    """Anything this package raises on purpose."""


class ApiError(DistilleryClientError):
    """The API refused a request. `errors` names the fields at fault (a 422's), each with
    its message; `retry_after` is the Retry-After header's seconds, when it sent one."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        errors: list[ProblemField] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, title, detail, errors, retry_after)
        self.status, self.code, self.title, self.detail = status, code, title, detail
        self.errors = errors or []
        self.retry_after = retry_after

    @property
    def headline(self) -> str:
        """`422 Invalid request: <detail>`."""
        return f"{self.status} {self.title}: {self.detail}"

    def __str__(self) -> str:
        """The headline, then each field at fault with its message, one a line."""
        return self.headline + "".join(f"\n  {e.field}: {e.message}" for e in self.errors)


class BadRequest(ApiError):
    """400: a malformed body or header."""


class Unauthorized(ApiError):
    """401: no API key, or an unknown one."""


class Forbidden(ApiError):
    """403: a revoked key."""


class NotFound(ApiError):
    """404: no such job, artifact, model or dataset (in the key's project)."""


class Conflict(ApiError):
    """409: the resource's state forbids it (cancelling a finished job, a model in use)."""


class TooLarge(ApiError):
    """413: a body over the server's cap."""


class UnsupportedMediaType(ApiError):
    """415."""


class RangeNotSatisfiable(ApiError):
    """416."""


class InvalidRequest(ApiError):
    """422: a spec, a query or an upload the API refused; `errors` says which fields."""


class RateLimited(ApiError):
    """429: over a project quota, still so after the client's retries."""


class ServerError(ApiError):
    """5xx."""


class Unavailable(ServerError):
    """503: the API or one of its dependencies is down, still so after the retries."""


class ChecksumMismatch(DistilleryClientError):
    """A downloaded file's sha256 is not the one the API lists for it (the file is removed)."""


BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    415: UnsupportedMediaType,
    416: RangeNotSatisfiable,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
}


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (the delay form; the API never sends a date), if any."""
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def from_response(response: httpx.Response) -> ApiError:
    """The exception for an error response: its problem+json body, or the bare status when
    the body is something else (a proxy's page)."""
    status = response.status_code
    cls = BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    try:
        problem = Problem.model_validate(_json(response))
    except ValueError:
        phrase = response.reason_phrase or "Error"
        return cls(status, "http_error", phrase, response.text[:500], None, retry_after(response))
    return cls(
        status,
        problem.code,
        problem.title,
        problem.detail,
        problem.errors,
        retry_after(response),
    )


def _json(response: httpx.Response) -> Any:
    if not response.is_stream_consumed:
        response.read()
    return response.json()
