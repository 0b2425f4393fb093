"""Request bodies as pydantic models, for the OpenAPI schema at ``/docs`` and the list of known
fields. Handlers validate the parsed JSON themselves (``inputs``), so that each error names its
field in the API's own error shape and keeps the library's messages."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Region = dict[str, Any]
_REGION_DOC = ('{"box": [x1, y1, x2, y2]} | {"points": [[x, y], ...], "labels": [1, 0, ...]} | '
               '{"mask": COCO RLE {"size": [h, w], "counts": str} or "data:image/png;base64,..."}')


class Generation(BaseModel):
    max_new_tokens: int | None = Field(None, ge=1, description="cap on generated tokens")
    temperature: float | None = Field(None, ge=0, description="0 or absent: greedy; > 0: sampling")
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None


class ImageUpload(BaseModel):
    image: str = Field(description="data:image/...;base64,... (or a multipart field 'file')")


class SegmentRequest(BaseModel):
    image_id: str | None = Field(None, description="from POST /v1/images (encoding cached)")
    image: str | None = Field(None, description="data URI, instead of image_id")
    regions: list[Region] = Field(description=_REGION_DOC)


class PerceiveRequest(SegmentRequest, Generation):
    tasks: list[str] = Field(["detailed_caption"], description="label, definition, brief_caption, detailed_caption, question")
    lang: Literal["en", "zh"] = "en"
    question: str | None = Field(None, description="the free question of task 'question'")
    stream: bool = Field(False, description="server-sent events: mask, token..., result, done")


class PerceiveVideoRequest(Generation):
    video_id: str
    objects: list[Region] = Field(description="each a region plus 'frame': the source frame it is drawn on")
    tasks: list[str] = ["video_caption"]
    lang: Literal["en", "zh"] = "en"
    question: str | None = None
    num_frames: int | None = Field(None, ge=1, description="sample this many frames evenly (default: all)")


class StreamRequest(Generation):
    video_id: str
    region: Region | None = Field(None, description="the object on the first frame; " + _REGION_DOC)
    regions: list[Region] | None = Field(None, description="several objects instead of 'region'")
    clip: int | str = Field(32, description="frames per clip (32) or seconds ('2s')")
    lang: Literal["en", "zh"] = "en"
    mode: Literal["released", "paper"] = "released"
    max_clips: int | None = None


def field_names(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


def body(model: type[BaseModel] | None, multipart: bool = False) -> dict:
    """``openapi_extra`` describing a request body (JSON and/or a multipart 'file')."""
    content: dict[str, Any] = {}
    if model is not None:
        content["application/json"] = {"schema": model.model_json_schema()}
    if multipart:
        content["multipart/form-data"] = {"schema": {"type": "object", "required": ["file"],
                                                     "properties": {"file": {"type": "string", "format": "binary"}}}}
    return {"requestBody": {"required": True, "content": content}}
