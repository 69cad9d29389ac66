"""Reading registered data where it lies, against a real S3 server on loopback (tests/s3.py):
an ImageFolder in a bucket is packed into the store exactly as the same images uploaded in
a zip are (same shards, same index, same sha256); WebDataset shards written by the
`webdataset` package are indexed where they are, and every sample the index points at reads
back as written and decodes as the training process decodes it; every bad object is named;
a model's bytes are copied with their sha256 once its header fits the architecture."""

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import webdataset as wds
from safetensors.torch import save

from service import store
from service.config import get_settings
from service.ingest import imagefolder, remote, shards, weights
from service.ingest.archives import Budget
from service.store import Store
from tests.photos import encoded, photo
from tests.s3 import S3Server
from worker.engine.data.decode import ShardSamples, decode
from worker.engine.zoo import build_model
from worker.job.stored_shards import read_from_bucket
from worker.task.cache import URIS, Cache


@pytest.fixture
def bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A new bucket this process reads with the deployment's (the S3 server's) credentials;
    the data dir (the worker's cache) in tmp_path."""
    for key, value in s3_server.aws_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DISTILLERY_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield s3_server.bucket()
    get_settings.cache_clear()


def put(server: S3Server, bucket: str, objects: dict[str, bytes]) -> None:
    client = server.client()
    for key, data in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)


def output(tmp_path: Path, name: str = "store") -> remote.Output:
    (tmp_path / "scratch").mkdir(exist_ok=True)
    folder = tmp_path / name
    return remote.Output(Store(folder.as_uri(), root=folder), "ds_1", tmp_path / "scratch")


def photos(classes: int = 3, train: int = 6, val: int = 2) -> dict[str, bytes]:
    """train/<class>/<n>.<ext> and val/...: JPEG and PNG of mixed sizes and modes."""
    rng = np.random.default_rng(0)
    out = {}
    for label in range(classes):
        for n in range(train + val):
            size = (int(rng.integers(20, 48)), int(rng.integers(20, 48)))
            ext, data = encoded(photo(label, rng, size), n + label)
            out[f"{'train' if n < train else 'val'}/class_{label}/{n:03d}.{ext}"] = data
    return out


def test_an_imagefolder_is_packed_as_its_upload_would_be(s3_server, bucket, tmp_path) -> None:
    images = photos()
    put(
        s3_server,
        bucket,
        {f"sets/pets/{k}": v for k, v in images.items()} | {"sets/pets/README": b"x"},
    )
    source, prefix = store.for_uri(f"s3://{bucket}/sets/pets/")
    out, progress = output(tmp_path), []
    found = remote.pack_imagefolder(
        source, prefix, f"s3://{bucket}/sets/pets/", out, progress.append
    )

    # the same images uploaded as a zip (in the same order), stored by the upload path
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(images):
            zf.writestr(name, images[name])
    (tmp_path / "upload.zip").write_bytes(buf.getvalue())
    budget = Budget(1000, 1 << 30)
    names = sorted(images)
    upload = tmp_path / "uploaded"
    index = imagefolder.store(tmp_path / "upload.zip", names, budget, upload, None)

    stored = tmp_path / "store" / "datasets" / "ds_1"
    assert (stored / shards.INDEX).read_bytes() == (upload / shards.INDEX).read_bytes()
    assert (stored / shards.SAMPLES).read_bytes() == (upload / shards.SAMPLES).read_bytes()
    for split in index["splits"].values():
        for shard in split["shards"]:
            assert (stored / shard["name"]).read_bytes() == (upload / shard["name"]).read_bytes()
    assert not any((tmp_path / "scratch").iterdir())  # each shard left the scratch folder
    assert found["sha256"] == hashlib.sha256((upload / shards.INDEX).read_bytes()).hexdigest()
    assert found["size"] == sum(f.stat().st_size for f in stored.rglob("*") if f.is_file())
    assert found["upload_size"] == sum(map(len, images.values()))
    assert (found["num_classes"], found["in_channels"], found["input_size"]) == (3, 3, None)
    assert (found["num_train"], found["num_val"], found["class_counts"]) == (18, 6, [8, 8, 8])
    assert found["class_names"] == ["class_0", "class_1", "class_2"]
    assert progress[-1] == {"objects": 24, "done": 24, "bytes": found["upload_size"]}


def test_every_bad_image_is_named_and_nothing_is_packed(s3_server, bucket, tmp_path) -> None:
    images = photos(classes=2)
    jpeg = next(v for k, v in images.items() if k.endswith(".jpg"))
    images |= {
        "train/class_1/truncated.jpg": jpeg[: len(jpeg) // 2],
        "val/class_0/empty.png": b"",
        "val/class_0/notes.png": b"hello",
    }
    put(s3_server, bucket, images)
    source, prefix = store.for_uri(f"s3://{bucket}")
    with pytest.raises(remote.Invalid) as refused:
        remote.pack_imagefolder(source, prefix, f"s3://{bucket}/", output(tmp_path), lambda _: None)
    assert [p.split(" ")[0] for p in refused.value.problems] == [
        f"s3://{bucket}/train/class_1/truncated.jpg",
        f"s3://{bucket}/val/class_0/empty.png",
        f"s3://{bucket}/val/class_0/notes.png",
    ]
    assert all("is not a readable image" in p for p in refused.value.problems)
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.tar"))


def test_what_is_wrong_before_reading_is_named_too(
    s3_server, bucket, tmp_path, monkeypatch
) -> None:
    images = photos(classes=2, train=3, val=0)
    big = max(images, key=lambda k: len(images[k]))
    images["val/class_0/only.png"] = images[big]
    put(s3_server, bucket, images)
    monkeypatch.setattr(remote, "MAX_OBJECT_BYTES", len(images[big]) - 1)
    source, prefix = store.for_uri(f"s3://{bucket}")
    with pytest.raises(remote.Invalid) as refused:
        remote.pack_imagefolder(source, prefix, f"s3://{bucket}/", output(tmp_path), lambda _: None)
    cap = len(images[big]) - 1
    assert refused.value.problems == [
        f"s3://{bucket}/: the val split needs at least 2 images",
        f"s3://{bucket}/{big} is {cap + 1} bytes: an image may be {cap}",
        f"s3://{bucket}/val/class_0/only.png is {cap + 1} bytes: an image may be {cap}",
    ]


def test_a_folder_that_is_not_an_imagefolder_is_refused(s3_server, bucket, tmp_path) -> None:
    put(s3_server, bucket, {"a/b/c/1.png": b"x", "a/2.png": b"y"})
    source, prefix = store.for_uri(f"s3://{bucket}/a/")
    with pytest.raises(remote.Invalid, match="<class>/ folders"):
        remote.pack_imagefolder(
            source, prefix, f"s3://{bucket}/a/", output(tmp_path), lambda _: None
        )
    with pytest.raises(remote.Invalid, match="no images"):
        remote.pack_imagefolder(
            source, "empty/", f"s3://{bucket}/empty/", output(tmp_path), lambda _: None
        )


def wds_shards(
    folder: Path, count: int, labels: int, pattern: str, per_shard: int
) -> list[dict[str, Any]]:
    """Shards written by the `webdataset` package; the samples written, in order."""
    rng = np.random.default_rng(len(pattern))
    samples = []
    with wds.ShardWriter(str(folder / pattern), maxcount=per_shard, verbose=0) as sink:
        for i in range(count):
            label = i % labels
            ext, data = encoded(photo(label, rng, (int(rng.integers(16, 40)), 24)), i)
            sample = {
                "__key__": f"{pattern[:3]}/s{i:04d}",
                ext: data,
                "cls": label,
                "json": {"i": i},
            }
            sink.write(sample)
            samples.append(sample)
    return samples


def test_webdataset_shards_are_indexed_where_they_lie(s3_server, bucket, tmp_path) -> None:
    written = {"train": wds_shards(tmp_path, 11, 3, "train-%06d.tar", 4)}
    written["val"] = wds_shards(tmp_path, 5, 3, "val-%06d.tar", 10)
    tars = {p.name: p.read_bytes() for p in tmp_path.glob("*.tar")}
    put(s3_server, bucket, {f"wds/{name}": data for name, data in tars.items()})
    uri = f"s3://{bucket}/wds/"
    source, prefix = store.for_uri(uri)
    out, progress = output(tmp_path), []
    names = ["cat", "dog", "fox"]
    found = remote.index_webdataset(source, prefix, uri, out, progress.append, names)

    assert (found["num_train"], found["num_val"], found["class_names"]) == (11, 5, names)
    assert found["splits"]["train"]["class_counts"] == [4, 4, 3]
    assert found["class_counts"] == [6, 6, 4]
    assert found["upload_size"] == sum(map(len, tars.values())) and progress[-1]["done"] == 4
    index_path = tmp_path / "store" / "datasets" / "ds_1" / shards.INDEX
    index = shards.read_index(index_path.parent)
    for split, samples in written.items():
        entries = index["splits"][split]["shards"]
        assert [e["uri"] for e in entries] == [f"{uri}{e['name']}" for e in entries]
        assert all(e["sha256"] == hashlib.sha256(tars[e["name"]]).hexdigest() for e in entries)
        columns = shards.read_samples(index_path.parent, split)
        for i, sample in enumerate(samples):  # the bytes the index points at are the image's
            shard, offset, size = (int(columns[c][i]) for c in ("shard", "offset", "size"))
            image = next(v for k, v in sample.items() if k in remote.IMAGE_FIELDS)
            key = f"wds/{entries[shard]['name']}"
            assert b"".join(source.chunks(key, offset, offset + size)) == image
            assert int(columns["label"][i]) == sample["cls"]

    # a training process reads them by range where they lie, as it decodes an upload's,
    # while their shards are fetched into the worker's cache; then from the cache
    read = shards.read(index_path)
    warming = read_from_bucket(read, None, Cache.default())  # the store's folder: no key
    assert warming is not None
    val = ShardSamples(read["splits"]["val"], read["sha256"], 3, 16)
    check_decoded(val, written["val"])
    warming.join(60)
    cached = get_settings().cache_dir.resolve() / URIS / bucket / "wds"
    assert {p.name: p.read_bytes() for p in cached.glob("*.tar")} == tars
    check_decoded(ShardSamples(read["splits"]["val"], read["sha256"], 3, 16), written["val"])


def check_decoded(split: ShardSamples, samples: list[dict[str, Any]]) -> None:
    for i, sample in enumerate(samples):
        image = next(v for k, v in sample.items() if k in remote.IMAGE_FIELDS)
        x, y = split[i]
        assert torch.equal(x, decode(image, 3, 16)) and int(y) == sample["cls"]


def test_every_bad_sample_and_shard_is_named(s3_server, bucket, tmp_path) -> None:
    wds_shards(tmp_path, 4, 2, "train-%06d.tar", 10)
    good = (tmp_path / "train-000000.tar").read_bytes()
    bad = tmp_path / "bad.tar"
    with wds.TarWriter(str(bad)) as sink:
        sink.write({"__key__": "nolabel", "png": b"\x89PNG\r\n\x1a\n"})
        sink.write({"__key__": "noimage", "cls": 1})
        sink.write({"__key__": "toobig", "jpg": b"\xff\xd8\xff" + b"0" * 100, "cls": 7})
    put(
        s3_server,
        bucket,
        {"w/train-000000.tar": good, "w/train-bad.tar": bad.read_bytes(), "w/train-1.tar.gz": b"x"},
    )
    uri = f"s3://{bucket}/w/"
    source, prefix = store.for_uri(uri)
    with pytest.raises(remote.Invalid) as refused:
        remote.index_webdataset(source, prefix, uri, output(tmp_path), lambda _: None, ["a", "b"])
    problems = refused.value.problems
    assert (
        problems[0]
        == f"{uri}train-1.tar.gz: a compressed shard cannot be read by offset; store .tar"
    )
    shard = f"{uri}train-bad.tar"
    assert f"{shard}: sample 'nolabel' has no .cls label" in problems
    assert f"{shard}: sample 'noimage' has no .jpg/.jpeg/.png/.webp/.bmp image" in problems
    assert f"{shard}:toobig.cls: label 7, but 2 class names" in problems
    assert any(p.startswith(f"{shard}:toobig.jpg is not a readable image") for p in problems)


def test_shards_must_say_their_split_all_or_none() -> None:
    assert remote.shard_splits(["a.tar", "b/c.tar"], "s3://x/") == {
        "a.tar": "train",
        "b/c.tar": "train",
    }
    marked = ["train/0.tar", "val/0.tar", "shards/train_1.tar", "val.2.tar"]
    assert remote.shard_splits(marked, "s3://x/") == dict(
        zip(marked, ["train", "val", "train", "val"], strict=True)
    )
    with pytest.raises(remote.Invalid, match="neither train nor val: s3://x/extra.tar"):
        remote.shard_splits(["train-0.tar", "extra.tar"], "s3://x/")
    with pytest.raises(remote.Invalid, match="no train shards"):
        remote.shard_splits(["val-0.tar"], "s3://x/")


def test_a_model_is_copied_with_its_sha256_once_its_header_fits(
    s3_server, bucket, tmp_path
) -> None:
    good = save(dict(build_model("cnn_small", 10, 1).state_dict()))
    other = save(dict(build_model("cnn_small", 7, 1).state_dict()))
    put(
        s3_server,
        bucket,
        {
            "m/good.safetensors": good,
            "m/other.safetensors": other,
            "m/pickle": b"\x80\x04.",
            "m/empty": b"",
        },
    )
    dest = Store((tmp_path / "store").as_uri(), root=tmp_path / "store")
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def fetch(key: str, cap: int = 1 << 30) -> dict[str, Any]:
        source, _ = store.for_uri(f"s3://{bucket}/{key}")

        def check(header: weights.Header) -> list[str]:
            return weights.signature_problems(header, "cnn_small", 10, 1)

        out = (dest, "models/mdl_1/weights.safetensors")
        return remote.fetch_model(f"s3://{bucket}/{key}", source, key, out, scratch, check, cap)

    assert fetch("m/good.safetensors") == {
        "sha256": hashlib.sha256(good).hexdigest(),
        "size": len(good),
    }
    assert (tmp_path / "store" / "models" / "mdl_1" / "weights.safetensors").read_bytes() == good
    with pytest.raises(remote.Invalid, match="architecture expects"):
        fetch("m/other.safetensors")
    for key in ("m/pickle", "m/empty"):
        with pytest.raises(remote.Invalid, match="not a safetensors file"):
            fetch(key)
    with pytest.raises(remote.Invalid, match="no object at"):
        fetch("m/absent.safetensors")
    with pytest.raises(remote.Invalid, match="MAX_UPLOAD_BYTES"):
        fetch("m/good.safetensors", cap=100)
    assert not any(scratch.iterdir())
