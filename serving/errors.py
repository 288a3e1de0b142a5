"""Every error as OpenAI's `{"error": {"message", "type", "param", "code"}}` body, whatever raised it."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from serving.protocol import APIError, error_body

__all__ = ["add_error_handlers"]

log = logging.getLogger(__name__)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_, e: APIError) -> JSONResponse:
        return JSONResponse(e.body, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_, e: RequestValidationError) -> JSONResponse:
        problems, params = [], []
        for item in e.errors():
            loc = [str(part) for part in item["loc"] if part != "body"]
            if item["type"] == "json_invalid":
                problems.append(
                    f"the body is not valid JSON: {item.get('ctx', {}).get('error', item['msg'])}"
                )
                loc = []
            elif not loc:
                problems.append("the body must be a JSON object sent as Content-Type: application/json")
            elif loc[0] == "prompt":  # one failure per member of the union; say it once
                problems.append(
                    "prompt: must be a string, a list of strings, token ids, or a list of token-id lists"
                )
            elif item["type"] == "extra_forbidden":
                problems.append(f"{'.'.join(loc)}: unknown or unsupported parameter")
            else:
                problems.append(f"{'.'.join(loc)}: {item['msg']}")
            params.append(loc[0] if loc else None)
        message = "; ".join(dict.fromkeys(problems))
        return JSONResponse(
            error_body(message, param=params[0] if params else None, code="invalid_value"), 400
        )

    @app.exception_handler(HTTPException)
    async def http_error(_, e: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(e.detail)), status_code=e.status_code, headers=e.headers)

    @app.exception_handler(Exception)
    async def internal_error(_, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("internal server error", type="server_error"), status_code=500)
