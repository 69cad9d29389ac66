"""Bring your own data, end to end: digits uploaded in each format over real HTTP, then a
real worker trains on the upload and its student loads with the reported accuracy."""

import hashlib
import math
from pathlib import Path

import pytest

from tests.e2e.conftest import Service, load_student
from tests.service.api.test_datasets import (
    OCTET,
    digits_npz,
    idx_members,
    imagefolder_members,
    tar_bytes,
    zip_bytes,
)

# training through a real worker is the same on either backend: the production shape only
# (the API's and the job lifecycle's backend differences are tested on both elsewhere)
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

SPEC = {
    "name": "digits-upload",
    "method": {"name": "supervised"},
    "student": {"arch": "cnn_small"},
    "train": {"epochs": 2, "batch_size": 64, "seed": 0, "optimizer": {"name": "sgd", "lr": 0.1}},
}


FORMATS = {  # each built by the test from real digits images
    "npz": digits_npz,
    "idx": lambda: tar_bytes(idx_members()),
    "imagefolder": lambda: zip_bytes(imagefolder_members(split=True)),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_a_job_trains_on_an_uploaded_dataset(service: Service, tmp_path: Path, fmt: str) -> None:
    body = FORMATS[fmt]()
    r = service.http.post("/v1/datasets", content=body, headers=OCTET, params={"name": fmt})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["format"] == fmt and ds["upload_sha256"] == hashlib.sha256(body).hexdigest()

    data = {"dataset": "upload", "upload": ds["id"], "val_fraction": 0.2}
    job = service.submit({**SPEC, "data": data})
    assert job["dataset_id"] == ds["id"]
    job = service.wait_status(job["id"], "succeeded")
    card = load_student(service, job, tmp_path)  # reproduces the reported accuracy
    assert card["input_shape"][1:] == [8, 8] and card["class_names"] == ds["class_names"]
    assert card["dataset"]["upload"] == ds["id"]
    # its own validation split, or the worker's: sklearn rounds the test share up
    expected_val = ds["num_val"] if ds["num_val"] is not None else math.ceil(0.2 * ds["num_train"])
    assert card["dataset"]["val_size"] == expected_val
    assert service.http.delete(f"/v1/datasets/{ds['id']}").status_code == 204
