"""Data URIs are s3:// only, spelt one way, with no credentials; prefixes hold what lies under
them segment by segment; DISTILLERY_DATA_URIS gives every project some and a project its own."""

import pytest

from service.spec import uris


@pytest.mark.parametrize(
    ("uri", "bucket", "key"),
    [
        ("s3://photos", "photos", ""),
        ("s3://photos/", "photos", ""),
        ("s3://team-a.data/sets/cats/", "team-a.data", "sets/cats/"),
        ("s3://b12/year=2026/model.safetensors", "b12", "year=2026/model.safetensors"),
    ],
)
def test_a_uri_names_a_bucket_and_a_key(uri: str, bucket: str, key: str) -> None:
    assert uris.parse(uri) == (bucket, key)


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("https://bucket/x", "s3://"),
        ("file:///etc/passwd", "s3://"),
        ("S3://bucket/x", "s3://"),
        ("s3://AKIA:secret@bucket/x", "credentials"),
        ("s3://bucket/x?versionId=1", "credentials"),
        ("s3://bucket/x#y", "credentials"),
        ("s3://bucket/a%2F..%2Fb", "credentials"),
        ("s3://bucket/a\\b", "credentials"),
        ("s3://bucket/a\nb", "credentials"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket/..", "'..'"),
        ("s3://bucket/./a", "'.'"),
        ("s3://bucket//a", "empty"),
        ("s3://Bucket/a", "bucket name"),
        ("s3://b/a", "bucket name"),
        ("s3:///a", "bucket name"),
    ],
)
def test_anything_else_is_refused_saying_why(uri: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        uris.parse(uri)


def test_a_prefix_holds_what_lies_under_it_segment_by_segment() -> None:
    assert uris.is_under("s3://b12/data/cats/", "s3://b12/data")
    assert uris.is_under("s3://b12/data/", "s3://b12/data/")
    assert uris.is_under("s3://b12/data/m.safetensors", "s3://b12/")
    assert not uris.is_under("s3://b12/database/x", "s3://b12/data")
    assert not uris.is_under("s3://b123/data/x", "s3://b12/")
    assert not uris.is_under("s3://b12/dat", "s3://b12/data/")


def test_the_setting_gives_every_project_some_prefixes_and_a_project_its_own() -> None:
    setting = " s3://shared/sets , team-a=s3://team-a/raw/, team-a=s3://lake/a/ ,team-b=s3://b12"
    assert uris.allow_list(setting) == {
        "": ["s3://shared/sets/"],
        "team-a": ["s3://team-a/raw/", "s3://lake/a/"],
        "team-b": ["s3://b12/"],
    }
    assert uris.allowed(setting, "team-a") == [
        "s3://shared/sets/",
        "s3://team-a/raw/",
        "s3://lake/a/",
    ]
    assert uris.allowed(setting, "team-c") == ["s3://shared/sets/"]
    assert uris.allowed("", "team-a") == []


@pytest.mark.parametrize("setting", ["https://x/y", "team-a=s3://../x", "=s3://b12/x", "s3://b/x"])
def test_a_bad_setting_is_refused_naming_its_entry(setting: str) -> None:
    with pytest.raises(ValueError, match="DISTILLERY_DATA_URIS entry"):
        uris.allow_list(setting)
