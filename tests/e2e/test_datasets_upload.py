"""Bring your own data, end to end: digits uploaded as an .npz and as an IDX archive over
real HTTP, then a real worker trains on the upload and its student loads."""

import hashlib
from pathlib import Path

from tests.e2e.conftest import Service, load_student
from tests.service.test_api_datasets import OCTET, digits_npz, idx_members, tar_bytes

SPEC = {
    "name": "digits-upload",
    "method": {"name": "supervised"},
    "student": {"arch": "cnn_small"},
    "train": {"epochs": 2, "batch_size": 64, "seed": 0, "optimizer": {"name": "sgd", "lr": 0.1}},
}


def test_a_job_trains_on_an_uploaded_dataset(service: Service, tmp_path: Path) -> None:
    body = digits_npz()
    r = service.http.post("/v1/datasets", content=body, headers=OCTET, params={"name": "d"})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["upload_sha256"] == hashlib.sha256(body).hexdigest()
    idx = service.http.post("/v1/datasets", content=tar_bytes(idx_members()), headers=OCTET)
    assert idx.status_code == 201 and idx.json()["num_val"] == 297, idx.text

    data = {"dataset": "upload", "upload": ds["id"], "val_fraction": 0.2}
    job = service.submit({**SPEC, "data": data})
    assert job["dataset_id"] == ds["id"]
    job = service.wait_status(job["id"], "succeeded")
    card = load_student(service, job, tmp_path)
    assert card["input_shape"] == [1, 8, 8] and card["class_names"] == ds["class_names"]
    assert card["dataset"]["upload"] == ds["id"] and card["metrics"]["final"]["val_acc"] > 0.3
    assert service.http.delete(f"/v1/datasets/{ds['id']}").status_code == 204
