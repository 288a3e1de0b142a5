"""Every error as OpenAI's `{"error": {"message", "type", "param", "code"}}` body, whatever raised it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from serving.protocol import INVALID_UNICODE, APIError, error_body

__all__ = ["add_error_handlers"]

log = logging.getLogger(__name__)

# Text without a UTF-8 form: a string value (our check) or an object key (pydantic's own).
UNICODE_ERRORS = frozenset({INVALID_UNICODE, "string_unicode"})


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_, e: APIError) -> JSONResponse:
        return JSONResponse(e.body, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_, e: RequestValidationError) -> JSONResponse:
        items = _most_specific(e.errors())
        message = "; ".join(dict.fromkeys(_problem(item) for item in items))
        return JSONResponse(error_body(message, param=_param(items[0]), code="invalid_value"), 400)

    @app.exception_handler(HTTPException)
    async def http_error(_, e: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(_detail(e)), status_code=e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def internal_error(_, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("internal server error", type="server_error"), status_code=500)


def _detail(e: HTTPException) -> str:
    """The error's message; where FastAPI says only "There was an error parsing the body", the cause."""
    cause = e.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not valid UTF-8: {cause.reason} at byte {cause.start}"
    if isinstance(cause, RecursionError):
        return "the body is not valid JSON here: it nests arrays or objects too deeply"
    return str(e.detail)


def _loc(item: dict[str, Any]) -> list[str]:
    """Where in the body the error is. An unknown key may hold a lone surrogate, which must not reach
    the response unescaped (it cannot be encoded), so each part is written as printable UTF-8."""
    return [str(part).encode("utf-8", "backslashreplace").decode() for part in item["loc"] if part != "body"]


def _param(item: dict[str, Any]) -> str | None:
    loc = _loc(item)
    return loc[0] if loc and item["type"] != "json_invalid" else None


def _most_specific(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The errors without those that a Unicode error makes moot: text that fails the Unicode check
    also fails every other member of its union (it is not a list), which would only mislead."""
    unicode_params = {_param(item) for item in items if item["type"] in UNICODE_ERRORS}
    return [item for item in items if item["type"] in UNICODE_ERRORS or _param(item) not in unicode_params]


def _problem(item: dict[str, Any]) -> str:
    loc = _loc(item)
    if item["type"] == "json_invalid":
        return f"the body is not valid JSON: {item.get('ctx', {}).get('error', item['msg'])}"
    if item["type"] == INVALID_UNICODE:  # which string of a list, too
        where = loc[0] + "".join(f"[{part}]" for part in item["loc"] if isinstance(part, int))
        return f"{where}: {item['msg']}"
    if item["type"] == "string_unicode":
        return f"{'.'.join(loc) or 'a key'}: not valid Unicode: a lone surrogate has no UTF-8 encoding"
    if not loc:
        return "the body must be a JSON object sent as Content-Type: application/json"
    if loc[0] == "prompt":  # one failure per member of the union; say it once
        return "prompt: must be a string, a list of strings, token ids, or a list of token-id lists"
    if item["type"] == "extra_forbidden":
        return f"{'.'.join(loc)}: unknown or unsupported parameter"
    return f"{'.'.join(loc)}: {item['msg']}"
