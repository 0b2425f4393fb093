"""One error vocabulary for every endpoint: ``{"error": {"message", "type", "param"}}`` (OpenAI's shape)."""

from __future__ import annotations

import re

_REGION = re.compile(r"^region (\d+):")


class ApiError(Exception):
    """A request the server refuses; ``param`` names the offending field (``regions[0]``, ``image``...)."""

    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, status: int | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param)


class NotFound(ApiError):
    status = 404
    type = "not_found_error"


class Forbidden(ApiError):
    status = 403
    type = "permission_error"


class TooLarge(ApiError):
    status = 413
    type = "request_too_large"


class Busy(ApiError):
    status = 429
    type = "rate_limit_error"


def error_body(message: str, type: str, param: str | None) -> dict:
    return {"error": {"message": message, "type": type, "param": param}}


def from_value_error(err: Exception, param: str | None, regions_param: str = "regions") -> ApiError:
    """A library ``ValueError`` (bad region, task, language...) as a 400 naming the field: region
    errors start with ``region i:``, so they point at ``regions[i]``."""
    msg = str(err)
    m = _REGION.match(msg)
    if m:
        return ApiError(msg, f"{regions_param}[{m.group(1)}]")
    return ApiError(msg, param)
