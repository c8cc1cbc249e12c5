"""OpenAI-shaped errors and the one middleware that turns every failure into one.

Every response that is not a success carries `{"error": {"message", "type", "param", "code"}}`
with its HTTP status, including aiohttp's own 404/405/413, so clients need one error path.
"""

from __future__ import annotations

import logging

from aiohttp import web

from kiln.errors import KilnError

log = logging.getLogger("kiln.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    503: "server_overloaded",
}


class APIError(Exception):
    """An error with an HTTP status that the middleware renders as OpenAI JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict:
    err_type = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


def error_response(err: APIError) -> web.Response:
    return web.json_response(
        error_body(err.status, err.message, err.param, err.code),
        status=err.status,
        headers=err.headers,
    )


def param_of(err: KilnError) -> str | None:
    """`SamplingParams` messages start with `field=value`; that field is the OpenAI `param`."""
    head = str(err).split("=", 1)[0]
    return head if head.isidentifier() else None


def code_of(err: KilnError) -> str | None:
    """OpenAI's code for the engine's one well-known refusal; None for the rest."""
    return "context_length_exceeded" if "context length" in str(err) else None


def from_http_exception(exc: web.HTTPException) -> APIError:
    status = exc.status
    if status == 404:
        return APIError(404, "no route matches this path", code="not_found")
    if status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        return APIError(
            405,
            f"method not allowed; use {allowed}",
            code="method_not_allowed",
            headers={"Allow": allowed},
        )
    if status == 413:
        return APIError(413, f"request body too large: {exc.text}", code="request_too_large")
    return APIError(
        status,
        exc.reason or exc.text or "HTTP error",
        headers={k: v for k, v in exc.headers.items() if k == "Retry-After"},
    )


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Render every failure of a handler as an OpenAI-shaped JSON error."""
    try:
        return await handler(request)
    except APIError as e:
        return error_response(e)
    except KilnError as e:
        return error_response(APIError(400, str(e), param=param_of(e), code=code_of(e)))
    except web.HTTPException as e:
        if e.status < 400:
            raise  # redirects and the like are not errors
        return error_response(from_http_exception(e))
    except (ConnectionResetError, OSError) as e:
        # The client went away mid-response: nothing can be sent any more.
        log.debug("client disconnected: %s", e)
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(APIError(500, "internal server error", code="internal_error"))
