"""A dataset or a model registered by URI, read where it lies, in a process of its own:

    python -m worker.job.uri_check dataset FORMAT URI DATASET_ID [CLASS_NAMES_JSON]
    python -m worker.job.uri_check model URI DEST_KEY ARCH NUM_CLASSES IN_CHANNELS

(service/ingest/remote.py does the reading; no database here: worker/task/check_runner.py
records what this prints). Prints one JSON line a second of progress, {"progress": {...}},
then the outcome: a dataset's row ({"status": "ready", ...}) or a model's {"sha256",
"size"}, or {"status": "invalid", "problems": [...]}. Exits RETRY when the store could not
be read or written: the check is tried again later."""

import json
import shutil
import sys
import time
from typing import Any

from service.config import get_settings
from service.ingest import remote, weights
from service.spec import uris
from service.spec.names import TIMM
from service.store import StoreError, dataset_key, for_uri, get_store

RETRY = 75  # EX_TEMPFAIL
PROGRESS_S = 1.0


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


class Reporter:
    """Progress printed at most every PROGRESS_S, and the last one always."""

    def __init__(self) -> None:
        self.last = 0.0
        self.latest: dict[str, int] = {}

    def __call__(self, progress: dict[str, int]) -> None:
        now, self.latest = time.monotonic(), progress
        if now - self.last >= PROGRESS_S or progress["done"] == progress["objects"]:
            self.last = now
            emit({"progress": progress})


def dataset(fmt: str, uri: str, dataset_id: str, class_names: list[str] | None) -> dict[str, Any]:
    source, prefix = for_uri(uris.folder(uri))
    scratch = get_settings().scratch_dir.resolve() / dataset_id
    shutil.rmtree(scratch, ignore_errors=True)  # an earlier attempt's
    scratch.mkdir(parents=True)
    store, report = get_store(), Reporter()
    out = remote.Output(store, dataset_id, scratch)
    try:
        if fmt == "imagefolder":
            found = remote.pack_imagefolder(source, prefix, uris.folder(uri), out, report)
        else:
            found = remote.index_webdataset(
                source, prefix, uris.folder(uri), out, report, class_names
            )
        return found | {"progress": report.latest}  # the row keeps the last count
    except remote.Invalid:
        store.delete_prefix(dataset_key(dataset_id, ""))  # no orphan of a refused set
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def model(uri: str, dest_key: str, arch: str, num_classes: int, in_channels: int) -> dict[str, Any]:
    settings = get_settings()
    scratch = settings.scratch_dir.resolve() / dest_key.replace("/", "_")
    scratch.mkdir(parents=True, exist_ok=True)

    def check(header: weights.Header) -> list[str]:
        """A zoo architecture's signature, as an upload's; a timm one's is loaded later."""
        if arch.startswith(TIMM):
            return []
        return weights.signature_problems(header, arch, num_classes, in_channels)

    source, key = for_uri(uri)
    try:
        out = (get_store(), dest_key)
        return remote.fetch_model(uri, source, key, out, scratch, check, settings.max_upload_bytes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str]) -> int:
    try:
        if argv[0] == "dataset":
            names = json.loads(argv[4]) if len(argv) > 4 else None
            emit(dataset(argv[1], argv[2], argv[3], names))
        else:
            emit(model(argv[1], argv[2], argv[3], int(argv[4]), int(argv[5])))
    except remote.Invalid as exc:
        emit({"status": "invalid", "problems": exc.problems})
    except (StoreError, FileNotFoundError) as exc:
        sys.stderr.write(f"the store could not be read or written: {exc}\n")
        return RETRY
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
