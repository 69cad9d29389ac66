"""Dataset routes: upload labelled images (streamed) or register them where they lie (a URI),
list, show and delete datasets."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from service.api.deps import (
    AUTHENTICATED,
    DB,
    KEYED,
    QUOTA,
    STORE,
    UPLOAD,
    Cursor,
    Limit,
    json_of,
    validated,
)
from service.api.schemas import DatasetList, DatasetOut, body_ref, problems
from service.errors import UnsupportedMediaType
from service.ingest import by_uri, datasets
from service.spec.limits import Ident, Name
from service.spec.uris import DatasetFromUri

router = APIRouter(
    prefix="/v1/datasets", tags=["datasets"], dependencies=AUTHENTICATED, responses=KEYED
)
BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "an .npz (images, labels), a zip/tar(.gz) of the four "
                "MNIST-style IDX files, or a zip/tar(.gz) ImageFolder tree of JPEG, PNG, "
                "WebP or BMP images of any sizes",
            },
            "application/json": {"schema": body_ref(DatasetFromUri)},
        },
    }
}
ACCEPTED = {202: {"model": DatasetOut, "description": "registered by URI: a worker reads it"}}


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    openapi_extra=BODY_DOC,
    responses=ACCEPTED | problems(400, 413, 415, 422) | QUOTA | STORE,
    dependencies=UPLOAD,
)
async def create_dataset(
    request: Request,
    response: Response,
    format: Annotated[
        datasets.Format | None, Query(description="recognised from the content when left out")
    ] = None,
    name: Annotated[Name | None, Query(max_length=200)] = None,
    num_classes: Annotated[
        int | None, Query(ge=2, le=100_000, description="labels must be below it")
    ] = None,
    class_names: Annotated[
        list[Name] | None,
        Query(max_length=100_000, description="IDX: the name of each label, in label order"),
    ] = None,
) -> DatasetOut:
    """`application/octet-stream`: the body is the file itself (up to
    DISTILLERY_MAX_UPLOAD_BYTES, counted as it streams in), decoded and checked before
    anything is stored. `application/json`: `{"name", "uri": "s3://bucket/prefix/",
    "format": "imagefolder" | "webdataset"}` registers data where it lies, under a prefix the
    deployment allows (DISTILLERY_DATA_URIS): 202, `validating` until a worker has read it
    (the query parameters are the upload's)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = validated(DatasetFromUri, json_of(await request.body()))
        dataset = await asyncio.to_thread(by_uri.register_dataset, body)
        response.status_code = 202
        response.headers["Location"] = f"/v1/datasets/{dataset.id}"
        return DatasetOut.model_validate(dataset)
    if content_type != "application/octet-stream":
        raise UnsupportedMediaType(
            content_type, 'send the file as application/octet-stream, or JSON {"uri": ...}'
        )
    info = datasets.UploadInfo(
        name=name, format=format, num_classes=num_classes, class_names=class_names
    )
    dataset = await datasets.upload(request.stream(), info)
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return DatasetOut.model_validate(dataset)


@router.get("", response_model=DatasetList, responses=problems(422))
def list_datasets(s: DB, limit: Limit = 50, cursor: Cursor = None) -> DatasetList:
    page, next_cursor = datasets.list_datasets(s, limit=limit, cursor=cursor)
    return DatasetList(data=[DatasetOut.model_validate(d) for d in page], next_cursor=next_cursor)


@router.get("/{dataset_id}", response_model=DatasetOut, responses=problems(404, 422))
def get_dataset(s: DB, dataset_id: Ident) -> DatasetOut:
    return DatasetOut.model_validate(datasets.get_dataset(s, dataset_id))


@router.delete("/{dataset_id}", status_code=204, responses=problems(404, 409, 422))
def delete_dataset(s: DB, dataset_id: Ident) -> Response:
    datasets.delete_dataset(s, dataset_id)
    return Response(status_code=204)
