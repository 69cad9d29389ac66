"""What every `distillery` client command shares (distillery_client/cli.py: jobs;
groups.py: models, datasets, webhooks): the global options, the API client, how API errors
become exit codes, and how results print.

Exit codes:
  0  done; for watch and submit --wait: the job (or sweep) succeeded
  1  the job (or sweep) failed
  2  bad input: a usage error, an unreadable spec file, or a request the API refused as
     invalid (400, 422: each field at fault is printed)
  3  the job was cancelled (or pruned: a sweep stopped it early); a sweep was cancelled
  4  any other API error (404, 409, 429 after retries, 5xx) or the API is unreachable
  5  a download's sha256 is not the one the API lists (nothing is kept)
"""

import functools
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from distillery_client import display, specfile
from distillery_client.client import MAX_PAGE, Client, ConnectionFailed
from distillery_client.errors import ApiError, BadRequest, ChecksumMismatch, InvalidRequest

EXIT_FAILED, EXIT_INVALID, EXIT_CANCELLED, EXIT_API, EXIT_CHECKSUM = 1, 2, 3, 4, 5
out, err = Console(), Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

JobArg = Annotated[str, typer.Argument(help="a job id")]
AsJson = Annotated[bool, typer.Option("--json", help="print the API's JSON")]


# -- jobs


@dataclass
class Options:
    url: str | None = None
    api_key: str | None = None
    json: bool = False


OPTIONS = Options()


def client() -> Client:
    return Client(OPTIONS.url, OPTIONS.api_key)


def handled(fn: F) -> F:
    """A command whose API errors print as one red message and an exit code (module doc)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (InvalidRequest, BadRequest) as exc:
            fail(exc.headline, EXIT_INVALID, exc.errors)
        except ApiError as exc:
            fail(str(exc), EXIT_API)
        except ConnectionFailed as exc:
            fail(f"cannot reach the API: {exc}", EXIT_API)
        except ChecksumMismatch as exc:
            fail(str(exc), EXIT_CHECKSUM)

    return run  # type: ignore[return-value]


def fail(message: str, code: int, errors: Any = ()) -> NoReturn:
    err.print(message, style="red", markup=False, highlight=False, soft_wrap=True)
    for e in errors:
        err.print(f"  {e.field}: {e.message}", style="red", markup=False, soft_wrap=True)
    raise typer.Exit(code)


@dataclass
class Located:
    field: str
    message: str


def load_spec(path: Path) -> tuple[dict[str, Any], str]:
    """A spec file's body and text (for `refused`'s line numbers); exit 2 when unreadable."""
    try:
        return specfile.load(path)
    except specfile.SpecFileError as exc:
        fail(str(exc), EXIT_INVALID)


def refused(path: Path, exc: InvalidRequest, text: str) -> None:
    """Exit 2 on a spec file the API refused: its title, then each field at fault with the
    line of the file it points at."""
    # the detail only lists the fields, which the lines below give one by one
    headline = exc.title if exc.errors else f"{exc.title}: {exc.detail}"
    located = []
    for e in exc.errors:
        line = specfile.line_of(text, e.field)
        located.append(Located(e.field, e.message + (f" (line {line})" if line else "")))
    fail(f"{path}: {headline}", EXIT_INVALID, located)


def say(line: str) -> None:
    """A plain line on stdout: never wrapped, no markup (scripts parse it)."""
    out.print(line, markup=False, highlight=False, soft_wrap=True)


def emit(value: Any) -> None:
    """JSON on stdout: a model, or a list of them, as the API sent it."""
    plain = _plain(value)
    sys.stdout.write(json.dumps(plain, indent=2) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def wants_json(flag: bool) -> bool:
    return flag or OPTIONS.json


def newest(pages: Callable[[int], Iterator[T]], limit: int) -> list[T]:
    """The `limit` newest rows, read in pages as large as the API gives (MAX_PAGE)."""
    return list(islice(pages(min(limit, MAX_PAGE)), limit))


def print_rows(
    rows: list[Any], columns: tuple[str, ...], as_json: bool, soft: tuple[str, ...] = ()
) -> None:
    """JSON; else a table fitted to the terminal (the last columns dropped first, `soft`
    ones cut: display.fitted); piped, one tab-separated line a row, in `columns`' order."""
    values = display.row_values(columns, rows)
    if wants_json(as_json):
        emit(rows)
    elif out.is_terminal:
        out.print(display.fitted(columns, values, out.width, columns, soft))
    else:
        sys.stdout.write(display.tsv(values))


class transfer_bar:
    """A byte progress bar on a terminal (nothing otherwise), as a `progress(done, total)`
    callback."""

    def __init__(self, label: str) -> None:
        self.bar = Progress(
            "{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            console=err, disable=not err.is_terminal,
        )  # fmt: skip
        self.task = self.bar.add_task(label, total=None)

    def __enter__(self) -> Callable[[int, int], None]:
        self.bar.start()
        return lambda done, total: self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *_: object) -> None:
        self.bar.stop()
