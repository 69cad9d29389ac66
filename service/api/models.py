"""Model routes: upload a teacher's weights (streamed), register a job's student, list,
show and delete models."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

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
from service.api.schemas import ModelList, ModelOut, body_ref, problems
from service.errors import FieldError, InvalidRequest, UnsupportedMediaType
from service.ingest import by_uri, models
from service.spec import limits, model_info
from service.spec.limits import MAX_JSON_DEPTH, Ident, Int64, Name
from service.spec.names import Arch

ACCEPTED = {202: {"model": ModelOut, "description": "registered by URI: a worker reads it"}}
router = APIRouter(
    prefix="/v1/models", tags=["models"], dependencies=AUTHENTICATED, responses=KEYED
)
BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "a safetensors file; the query names its architecture",
            },
            "application/json": {
                "schema": {"oneOf": [body_ref(model_info.FromJob), body_ref(model_info.FromUri)]}
            },
        },
    }
}


def _metadata(header: str | None) -> dict[str, Any]:
    if not header:
        return {}
    try:
        meta = limits.loads(header)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        message = (
            f"must be a JSON object, nested {MAX_JSON_DEPTH} levels deep at most, "
            'e.g. {"class_names": [...]}'
        )
        raise InvalidRequest(
            f"X-Model-Metadata {message}", [FieldError("X-Model-Metadata", message)]
        )
    return meta


@router.post(
    "",
    status_code=201,
    response_model=ModelOut,
    openapi_extra=BODY_DOC,
    responses=ACCEPTED | problems(400, 413, 415, 422) | QUOTA | STORE,
    dependencies=UPLOAD,
)
async def create_model(
    request: Request,
    response: Response,
    arch: Annotated[Arch | None, Query(description="upload: the architecture")] = None,
    num_classes: Annotated[Int64 | None, Query(description="upload")] = None,
    in_channels: Annotated[Int64 | None, Query(description="upload")] = None,
    input_size: Annotated[Int64 | None, Query(description="upload: image height = width")] = None,
    name: Annotated[Name | None, Query(max_length=200)] = None,
    filename: Annotated[str | None, Query(description="upload: the file's name")] = None,
    x_model_metadata: Annotated[
        str | None, Header(description="upload: JSON, e.g. normalisation and class_names")
    ] = None,
) -> ModelOut:
    """`application/octet-stream`: the body is a safetensors file, checked against `arch`
    as it streams in (up to DISTILLERY_MAX_UPLOAD_BYTES). `application/json`:
    `{"job": "<succeeded job>"}` registers that job's student; `{"uri": "s3://…", "arch",
    "num_classes", "in_channels", …}` a safetensors file in an object store, under a prefix
    the deployment allows (DISTILLERY_DATA_URIS): 202, `validating` until a worker has read
    and checked it."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        raw = json_of(await request.body())
        if isinstance(raw, dict) and "uri" in raw:
            by = validated(model_info.FromUri, raw)
            model = await asyncio.to_thread(by_uri.register_model, by)
            response.status_code = 202
        else:
            body = validated(model_info.FromJob, raw)
            model = await asyncio.to_thread(models.register_job, body)
    elif content_type == "application/octet-stream":
        models.refuse_pickle(filename)
        given = {
            "arch": arch,
            "num_classes": num_classes,
            "in_channels": in_channels,
            "input_size": input_size,
            "name": name,
        }
        fields = {k: v for k, v in given.items() if v is not None}
        info = validated(model_info.ModelInfo, _metadata(x_model_metadata) | fields)
        model = await models.upload(request.stream(), info)
    else:
        raise UnsupportedMediaType(
            content_type,
            'send the safetensors bytes as application/octet-stream, or JSON {"job": ...}',
        )
    response.headers["Location"] = f"/v1/models/{model.id}"
    return ModelOut.model_validate(model)


@router.get("", response_model=ModelList, responses=problems(422))
def list_models(s: DB, limit: Limit = 50, cursor: Cursor = None) -> ModelList:
    page, next_cursor = models.list_models(s, limit=limit, cursor=cursor)
    return ModelList(data=[ModelOut.model_validate(m) for m in page], next_cursor=next_cursor)


@router.get("/{model_id}", response_model=ModelOut, responses=problems(404, 422))
def get_model(s: DB, model_id: Ident) -> ModelOut:
    return ModelOut.model_validate(models.get_model(s, model_id))


@router.delete("/{model_id}", status_code=204, responses=problems(404, 409, 422))
def delete_model(s: DB, model_id: Ident) -> Response:
    models.delete_model(s, model_id)
    return Response(status_code=204)
