"""service.ingest.archives on crafted archives (tests/service/ingest/bombs.py), no app or
database: each bomb is refused from what it declares before it is inflated, a header that
lies cannot make a member inflate past its declared size, and honest archives still read."""

import bz2
import gzip
import io
import random
import re
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

from service.ingest import archives
from service.ingest.archives import MAX_UNPACK_RATIO, BadUpload, Budget
from tests.service.ingest import bombs
from tests.service.ingest.bombs import GIB, MIB, Member

CAP = 8 * GIB  # the default max_decompressed_bytes


def budget() -> Budget:
    return Budget(max_files=200_000, max_bytes=CAP)


def refused(tmp_path: Path, body: bytes, status: int, *, read: bool = False) -> str:
    """The refusal's message, from listing the archive (or reading it, with `read`)."""
    path = tmp_path / "upload"
    path.write_bytes(body)
    with pytest.raises(BadUpload) as info:
        if read:
            list(archives.files(path, budget()))
        else:
            archives.names(path, budget())
    assert info.value.status == status, info.value
    return str(info.value)


def read_all(tmp_path: Path, body: bytes) -> dict[str, bytes]:
    path = tmp_path / "upload"
    path.write_bytes(body)
    return dict(archives.files(path, budget()))


def deflated(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def test_a_classic_zip_bomb_is_refused_from_its_directory(tmp_path):
    body = bombs.zip_of(
        [bombs.honest("0/a.png", b"x"), Member("1/b.png", bombs.deflated_zeros(9216), 9 * GIB)]
    )
    says = refused(tmp_path, body, 413)
    assert f"declares more than {CAP} bytes unpacked ('1/b.png' declares {9 * GIB})" in says


def test_a_member_past_the_ratio_is_refused_under_the_cap(tmp_path):
    body = bombs.zip_of([Member("a/b.png", bombs.deflated_zeros(200), 200 * MIB)])
    says = refused(tmp_path, body, 413)
    assert f"member 'a/b.png' unpacks to {200 * MIB} bytes" in says
    assert f"more than {MAX_UNPACK_RATIO} times its size" in says


def test_many_small_members_past_the_ratio_are_refused(tmp_path):
    zeros = deflated(bytes(MIB))  # each member alone is under the ratio's floor
    body = bombs.zip_of([Member(f"a/{i}.png", zeros, MIB) for i in range(200)])
    assert "the archive unpacks to" in refused(tmp_path, body, 413)


def test_members_that_overlap_are_refused(tmp_path):
    kernel = deflated(random.Random(0).randbytes(200_000))  # a ratio of about 1
    body = bombs.overlapping_zip(["a/1.png", "a/2.png", "b/3.png"], kernel, 200_000)
    assert "'a/1.png' overlaps 'a/2.png'" in refused(tmp_path, body, 422)


def test_the_better_zip_bomb_is_refused(tmp_path):
    names = [f"{c}/{i}.png" for c in "ab" for i in range(50)]
    body = bombs.overlapping_zip(names, bombs.deflated_zeros(100), 100 * MIB)
    assert "dataset refused" in refused(tmp_path, body, 413)


@pytest.mark.parametrize(("method", "name"), [(9, "deflate64"), (zipfile.ZIP_BZIP2, "bzip2")])
def test_other_zip_methods_are_refused(tmp_path, method, name):
    body = bombs.zip_of([Member("a/b.png", b"\x00" * 10, 10, method=method)])
    assert f"'a/b.png' is compressed with zip method {method}" in refused(tmp_path, body, 422)


def test_a_stored_member_must_be_its_declared_size(tmp_path):
    body = bombs.zip_of([Member("a/b.png", b"x" * 10, 9 * GIB, method=zipfile.ZIP_STORED)])
    assert "stored uncompressed in 10 bytes but declares" in refused(tmp_path, body, 422)


def test_a_zip_whose_headers_lie_inflates_no_further_than_they_say(tmp_path):
    """9 GiB of zeros behind a directory that declares 1000 bytes (and their CRC): the member
    reads as 1000 bytes; inflating stopped there."""
    lie = Member("a/b.png", bombs.deflated_zeros(9216), 1000, crc=zlib.crc32(bytes(1000)))
    assert read_all(tmp_path, bombs.zip_of([lie])) == {"a/b.png": bytes(1000)}
    wrong_crc = Member("a/b.png", lie.data, 1000)
    assert "Bad CRC-32 for file 'a/b.png'" in refused(
        tmp_path, bombs.zip_of([wrong_crc]), 422, read=True
    )


def test_a_tar_declaring_more_than_the_cap_is_refused_at_its_header(tmp_path):
    body = bombs.tar_gz_of(bombs.declaring("a/b.png", 9 * GIB), 9216)
    assert f"('a/b.png' declares {9 * GIB})" in refused(tmp_path, body, 413)


def test_a_tar_past_the_ratio_is_refused_at_its_header(tmp_path):
    body = bombs.tar_gz_of(bombs.declaring("a/b.png", GIB), 1024)
    says = refused(tmp_path, body, 413)
    assert f"the archive (at 'a/b.png') unpacks to {GIB} bytes from {len(body)}" in says


def test_a_lying_pax_header_is_cut_off_at_the_ratio(tmp_path):
    """tarfile reads a pax header whole: the stream under it stops at the ratio instead."""
    body = bombs.tar_gz_of(bombs.declaring("a/b.png", 2 * GIB, tarfile.XHDTYPE), 2048)
    says = refused(tmp_path, body, 413)
    match = re.search(rf"the archive unpacks to (\d+) bytes from {len(body)}", says)
    assert match and int(match[1]) <= MAX_UNPACK_RATIO * len(body) + archives.CHUNK


@pytest.mark.parametrize(
    ("kind", "says"),
    [(tarfile.GNUTYPE_SPARSE, "sparse members are refused"), (b"V", "of type b'V'")],
)
def test_sparse_and_odd_tar_members_are_refused(tmp_path, kind, says):
    assert says in refused(tmp_path, bombs.tar_with(bombs.declaring("a/b.png", 0, kind)), 422)


def test_bzip2_tars_are_refused_by_name(tmp_path):
    body = bz2.compress(bombs.tar_with(tarfile.TarInfo("a/b.png")))
    assert "a bzip2-compressed tar is not accepted" in refused(tmp_path, body, 422)


def test_a_gzip_member_past_the_ratio_is_refused(tmp_path):
    data = gzip.compress(bytes(50 * MIB))
    with pytest.raises(BadUpload) as info:
        archives.gunzip(data, budget(), "train-images-idx3-ubyte.gz")
    assert info.value.status == 413 and "'train-images-idx3-ubyte.gz' unpacks to" in str(info.value)


def test_honest_archives_still_read(tmp_path):
    members = {"a/zeros.bmp": bytes(500_000), "b/text.png": b"abc" * 1000}  # under the floor
    zipped = bombs.zip_of([bombs.honest(n, d) for n, d in members.items()])
    assert read_all(tmp_path, zipped) == members
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    assert read_all(tmp_path, buf.getvalue()) == members
