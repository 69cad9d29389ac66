"""Data and models registered by URI, read where they lie (with the deployment's credentials:
service/store.py for_uri) by a worker, in a process of its own (worker/job/uri_check.py), and
written into the store under the row's own keys. Nothing is held whole in memory: one image
or tar member at a time (each at most MAX_OBJECT_BYTES), the listing's names and the index's
columns.

- ImageFolder (`<class>/<image>`, or the same under `train/` and `val/`): every image read
  once (WINDOW reads in flight), its header checked and its data decoded as an upload's
  (imagefolder.py), packed into the store's WebDataset shards (shards.py): each shard is
  put in the store once whole and leaves the scratch folder.
- WebDataset (`.tar` shards, each sample `<key>.<jpg|jpeg|png|webp|bmp>` + `<key>.cls`):
  each shard streamed once, its images checked, its sha256 and each sample's offset kept;
  the shards stay where they are and the store gets the index.
- A model (safetensors): its header read by range and checked as an upload's, its bytes
  copied into the store, hashed.
Every bad object is named in the problems (MAX_LISTED of them, then how many more)."""

import io
import re
import tarfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

from service import files
from service.ingest import archives, imagefolder, shards, weights
from service.ingest.archives import BadUpload
from service.store import Store, dataset_key

MAX_OBJECT_BYTES = 256 << 20  # an image or a tar member is read whole: a larger one is refused
MAX_LISTED = 20  # problems named one by one
WINDOW = 16  # image reads in flight: a bucket answers each in milliseconds, not microseconds
IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp", "bmp")  # a WebDataset sample's image
LABEL_FIELD = "cls"  # its label: the class index as text
SPLITS = imagefolder.SPLITS
COMPRESSED = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")
Report = Callable[[dict[str, int]], None]  # progress: counts of objects and bytes


class Invalid(Exception):
    """What was registered cannot be used: `problems` say why, naming the objects."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class Problems:
    """Bad objects found while reading on (so one pass names them all)."""

    listed: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED:
            self.listed.append(message)

    def check(self) -> None:
        """Invalid when any were found."""
        if self.count:
            more = self.count - len(self.listed)
            raise Invalid(self.listed + ([f"... and {more} more"] if more else []))


def message(exc: BadUpload) -> str:
    return exc.errors[0].message if exc.errors else exc.detail


@dataclass
class Output:
    """A registered dataset's stored form, written through a scratch folder into the store
    under the dataset's keys; the index goes last (its presence means the rest is whole)."""

    store: Store
    dataset_id: str
    scratch: Path
    stored: int = 0  # bytes put in the store

    def put(self, path: Path, name: str) -> None:
        self.store.put_file(dataset_key(self.dataset_id, name), path)
        self.stored += path.stat().st_size
        path.unlink()

    def put_shard(self, path: Path, entry: dict[str, Any]) -> None:
        self.put(path, entry["name"])

    def finish(
        self, writers: list[shards.SplitWriter], class_names: list[str], gray: bool, read: int
    ) -> dict[str, Any]:
        """Index and samples written and stored; what the dataset's row records."""
        index = shards.write_index(self.scratch, writers, class_names, 1 if gray else 3)
        digest = files.sha256_file(self.scratch / shards.INDEX)
        self.put(self.scratch / shards.SAMPLES, shards.SAMPLES)
        self.put(self.scratch / shards.INDEX, shards.INDEX)
        return facts(index, digest, self.stored, read)


def facts(index: dict[str, Any], digest: str, stored: int, read: int) -> dict[str, Any]:
    """A ready dataset's row from its index (service/ingest/datasets.py records an upload's
    the same way)."""
    splits = {
        name: {k: v for k, v in split.items() if k != "shards"}
        for name, split in index["splits"].items()
    }
    counts = zip(*(s["class_counts"] for s in splits.values()), strict=True)
    return {
        "status": "ready",
        "num_classes": len(index["class_names"]),
        "in_channels": index["channels"],
        "input_size": index["size"],
        "num_train": splits["train"]["count"],
        "num_val": splits["val"]["count"] if "val" in splits else None,
        "class_names": index["class_names"],
        "class_counts": [sum(c) for c in counts],
        "splits": splits,
        "sha256": digest,
        "size": stored,
        "upload_size": read,
    }


def listing(source: Store, prefix: str) -> dict[str, tuple[str, int]]:
    """{name under the prefix: (key, size)} of every object under `prefix` (a folder)."""
    return {k.removeprefix(prefix): (k, n) for k, n in source.sizes(prefix).items()}


# --- ImageFolder -------------------------------------------------------------------------


def pack_imagefolder(
    source: Store, prefix: str, uri: str, out: Output, report: Report
) -> dict[str, Any]:
    """Check every image of the ImageFolder under `uri` and pack them into the store."""
    objects = listing(source, prefix)
    roles, class_names = _layout(objects, uri)
    problems = _refused_unread(roles, objects, uri)
    labels = {c: i for i, c in enumerate(class_names)}
    splits = sorted({s for s, _ in roles.values()})
    writers = {s: shards.SplitWriter(out.scratch, s, closed=out.put_shard) for s in splits}
    gray, read = True, 0
    names = sorted(n for n in roles if objects[n][1] <= MAX_OBJECT_BYTES)
    for done, (name, data) in enumerate(_read_all(source, [objects[n][0] for n in names], names)):
        read += len(data)
        report({"objects": len(names), "done": done + 1, "bytes": read})
        try:
            info = imagefolder.check_image(data, f"{uri}{name}")
        except BadUpload as exc:
            problems.add(message(exc))
            continue
        gray &= info.gray
        if not problems.count:  # nothing more is packed once the set is known to be invalid
            split, folder = roles[name]
            writers[split].add(data, info.ext, labels[folder], info.width, info.height)
    problems.check()
    for writer in writers.values():
        writer.finish()
    return out.finish(list(writers.values()), class_names, gray, read)


def _layout(
    objects: dict[str, tuple[str, int]], uri: str
) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """{image: (split, class folder)} and the class names, as an upload's archive gives them."""
    try:
        roles = imagefolder.layout([n for n in objects if imagefolder.is_image(n)], uri)
        return roles, imagefolder.classes(roles, None)
    except BadUpload as exc:
        raise Invalid([message(exc)]) from exc


def _refused_unread(
    roles: dict[str, tuple[str, str]], objects: dict[str, tuple[str, int]], uri: str
) -> Problems:
    """What is wrong before an image is read: a split of one image, an image too large."""
    problems = Problems()
    for split in sorted({s for s, _ in roles.values()}):
        if sum(s == split for s, _ in roles.values()) < 2:
            problems.add(f"{uri}: the {split} split needs at least 2 images")
    for name in roles:
        if (size := objects[name][1]) > MAX_OBJECT_BYTES:
            problems.add(f"{uri}{name} is {size} bytes: an image may be {MAX_OBJECT_BYTES}")
    return problems


def _read_all(source: Store, keys: list[str], names: list[str]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each object in order, WINDOW of them read at once."""
    with ThreadPoolExecutor(WINDOW) as pool:
        pending: deque[tuple[str, Future[bytes]]] = deque()
        ahead = iter(zip(names, keys, strict=True))
        for name, key in ahead:
            pending.append((name, pool.submit(source.get_bytes, key)))
            if len(pending) == WINDOW:
                break
        while pending:
            name, read = pending.popleft()
            if (following := next(ahead, None)) is not None:
                pending.append((following[0], pool.submit(source.get_bytes, following[1])))
            yield name, read.result()


# --- WebDataset --------------------------------------------------------------------------


def index_webdataset(
    source: Store,
    prefix: str,
    uri: str,
    out: Output,
    report: Report,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """Check every sample of the WebDataset shards under `uri` and store their index; the
    shards stay where they are. Labels are class indices; `class_names` names them (else
    "0", "1", ... up to the largest label)."""
    objects = listing(source, prefix)
    problems = Problems()
    for name in sorted(n for n in objects if n.endswith(COMPRESSED)):
        problems.add(f"{uri}{name}: a compressed shard cannot be read by offset; store .tar")
    tars = sorted(n for n in objects if n.endswith(".tar"))
    if not tars:
        problems.check()
        raise Invalid([f"no .tar shards under {uri}"])
    splits = shard_splits(tars, uri)
    writers = {s: shards.SplitWriter(out.scratch, s) for s in sorted(set(splits.values()))}
    seen = Seen(class_names, problems)
    read = 0
    for done, name in enumerate(tars):
        writer = writers[splits[name]]
        writer.shards.append({"name": name, "uri": f"{uri}{name}", "count": 0})
        key, size = objects[name]
        writer.shards[-1] |= index_shard(source.chunks(key), f"{uri}{name}", writer, seen)
        read += size
        report({"objects": len(tars), "done": done + 1, "bytes": read})
    names = seen.class_names()
    problems.check()
    return out.finish(list(writers.values()), names, seen.gray, read)


def shard_splits(tars: list[str], uri: str) -> dict[str, str]:
    """{shard: split}: a shard under `train/` or `val/`, or named `train-…`/`val-…` (or with
    `_` or `.` after the word), is of that split; with none named so, all are train."""
    marked = {name: split_of(name) for name in tars}
    if all(split is None for split in marked.values()):
        return dict.fromkeys(tars, "train")
    if unmarked := [n for n, split in marked.items() if split is None]:
        listed = ", ".join(f"{uri}{n}" for n in unmarked[:MAX_LISTED])
        raise Invalid([f"shards in neither train nor val: {listed}"])
    if "train" not in marked.values():
        raise Invalid([f"no train shards under {uri} (only val)"])
    return {n: str(split) for n, split in marked.items()}


def split_of(name: str) -> str | None:
    folder, _, base = name.rpartition("/")
    if folder.split("/")[0] in SPLITS:
        return folder.split("/")[0]
    word = re.split(r"[-_.]", base, maxsplit=1)[0]
    return word if word in SPLITS else None


@dataclass
class Seen:
    """What the samples of every shard told: labels, whether every image was grayscale,
    and the problems."""

    given: list[str] | None
    problems: Problems
    top: int = -1  # the largest label
    gray: bool = True

    def label(self, raw: bytes, where: str) -> int | None:
        text = raw.decode("ascii", "replace").strip()
        if not text.isdigit():
            self.problems.add(f"{where}: the label {text[:20]!r} is not a class index")
            return None
        label = int(text)
        if self.given is not None and label >= len(self.given):
            self.problems.add(f"{where}: label {label}, but {len(self.given)} class names")
            return None
        self.top = max(self.top, label)
        return label

    def class_names(self) -> list[str]:
        names = self.given or [str(i) for i in range(self.top + 1)]
        if len(names) < 2:
            self.problems.add("at least 2 classes are needed")
        return names


@dataclass
class Sample:
    key: str
    image: tuple[str, int, bytes] | None = None  # member name, data offset, bytes
    label: bytes | None = None


def index_shard(
    chunks: Iterator[bytes], where: str, writer: shards.SplitWriter, seen: Seen
) -> dict[str, Any]:
    """Read one shard's samples into `writer`'s columns (its last shard); its sha256 and
    size as the shard's index entry."""
    stream = Streamed(chunks)
    shard = len(writer.shards) - 1
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for sample in samples(tar, where, seen.problems):
                row = checked(sample, where, seen)
                if row is not None:
                    writer.row(shard, *row)
    except tarfile.TarError as exc:
        seen.problems.add(f"{where} is not a readable tar: {exc}")
    stream.drain()
    return {"sha256": stream.digest.hexdigest(), "size": stream.size}


def checked(sample: Sample, where: str, seen: Seen) -> tuple[int, int, int, int, int] | None:
    """(offset, size, label, width, height) of a good sample; None when it is not."""
    if sample.image is None or sample.label is None:
        wanted = f".{'/.'.join(IMAGE_FIELDS)} image" if sample.image is None else ".cls label"
        seen.problems.add(f"{where}: sample {sample.key!r} has no {wanted}")
        return None
    name, offset, data = sample.image
    label = seen.label(sample.label, f"{where}:{sample.key}.{LABEL_FIELD}")
    try:
        info = imagefolder.check_image(data, f"{where}:{name}")
    except BadUpload as exc:
        seen.problems.add(message(exc))
        return None
    seen.gray &= info.gray
    return None if label is None else (offset, len(data), label, info.width, info.height)


def samples(tar: tarfile.TarFile, where: str, problems: Problems) -> Iterator[Sample]:
    """The shard's samples: consecutive members that share a key (the name up to the first
    dot of its last part, as WebDataset groups them)."""
    current: Sample | None = None
    for member in tar:
        if member.isdir():
            continue
        try:
            archives.check_tar_member(member, member.name)
        except BadUpload as exc:
            problems.add(f"{where}: {message(exc)}")
            continue
        key, ext = split_key(member.name)
        if current is None or key != current.key:
            if current is not None:
                yield current
            current = Sample(key)
        if ext in (*IMAGE_FIELDS, LABEL_FIELD):
            read_member(tar, member, current, f"{where}:{member.name}", problems)
    if current is not None:
        yield current


def read_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, sample: Sample, where: str, problems: Problems
) -> None:
    if member.size > MAX_OBJECT_BYTES:
        problems.add(f"{where} is {member.size} bytes: a member may be {MAX_OBJECT_BYTES}")
        return
    f = tar.extractfile(member)
    data = f.read() if f is not None else b""
    if member.name.endswith(f".{LABEL_FIELD}"):
        sample.label = data
    elif sample.image is not None:
        problems.add(f"{where}: sample {sample.key!r} has a second image")
    else:
        sample.image = (member.name, member.offset_data, data)


def split_key(name: str) -> tuple[str, str]:
    """(key, field): `dir/a.b.jpg` -> (`dir/a`, `b.jpg`), lower-cased field."""
    folder, slash, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return folder + slash + stem, ext.lower()


class Streamed(io.RawIOBase):
    """An object's chunks as a file read once from the start, hashed and counted as read."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.chunk, self.at = chunks, b"", 0
        self.digest, self.size = sha256(), 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            if self.at == len(self.chunk) and not self._next():
                break
            end = len(self.chunk) if size < 0 else min(len(self.chunk), self.at + size - len(out))
            out += memoryview(self.chunk)[self.at : end]
            self.at = end
        return bytes(out)

    def _next(self) -> bool:
        self.chunk, self.at = next(self.chunks, b""), 0
        self.digest.update(self.chunk)
        self.size += len(self.chunk)
        return bool(self.chunk)

    def drain(self) -> None:
        """Read to the end (a tar reader stops at its end-of-archive blocks)."""
        while self._next():
            pass


# --- a model -----------------------------------------------------------------------------


def fetch_model(
    uri: str,
    source: Store,
    key: str,
    out: tuple[Store, str],
    scratch: Path,
    check: Callable[[weights.Header], list[str]],
    cap: int,
) -> dict[str, Any]:
    """Copy the safetensors file at `uri` (`key` of `source`) to `out` (a store and a key),
    once its header is checked (`check` lists what is wrong with it); its sha256 and size."""
    meta = source.head(key)
    if meta is None:
        raise Invalid([f"no object at {uri}"])
    if meta.size > cap:
        raise Invalid([f"{uri} is {meta.size} bytes, more than {cap} (MAX_UPLOAD_BYTES)"])
    try:
        length = weights.header_length(
            b"".join(source.chunks(key, 0, 8)) if meta.size >= 8 else b""
        )
        header = weights.parse_header(b"".join(source.chunks(key, 8, 8 + length)))
    except weights.NotSafetensors as exc:
        raise Invalid([f"{uri}: {exc}"]) from exc
    if header.file_size != meta.size:
        raise Invalid([f"{uri} is {meta.size} bytes, its header says {header.file_size}"])
    if problems := check(header):
        raise Invalid(problems)
    path = source.download(key, scratch / "weights.safetensors")
    digest, size = files.sha256_file(path), path.stat().st_size
    if size != header.file_size:  # the object changed while it was read
        raise Invalid([f"{uri} changed while it was read ({size} bytes now)"])
    out[0].put_file(out[1], path)
    path.unlink()
    return {"sha256": digest, "size": size}
