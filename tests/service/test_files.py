"""service/files.py: a file's sha256 in chunks, and child paths that cannot escape a root."""

import hashlib

import pytest

from service import files


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "", "."])
def test_safe_child_refuses_escapes(tmp_path, name):
    with pytest.raises(ValueError):
        files.safe_child(tmp_path, name)


def test_safe_child_allows_nested_names(tmp_path):
    assert files.safe_child(tmp_path, "ckpt/epoch_1.safetensors") == (
        tmp_path.resolve() / "ckpt" / "epoch_1.safetensors"
    )


def test_sha256_file_reads_past_one_chunk(tmp_path):
    data = bytes(range(256)) * (files.CHUNK // 256 + 3)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert files.sha256_file(path) == hashlib.sha256(data).hexdigest()
