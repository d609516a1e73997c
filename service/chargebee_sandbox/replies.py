"""What the sandbox answers: `Reply`, Chargebee error bodies, the dropped connection, `ParamError`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

Json = dict[str, Any]

JSON_MEDIA_TYPE: Final = "application/json"

# api_error_code -> (type, message). Every OAS error schema requires `type`; the values follow the
# per-status enums (401 untyped, 429/500 operation_failed, 4xx invalid_request...).
_ERRORS: Final[Mapping[str, tuple[str, str]]] = {
    "api_authentication_failed": ("untyped", "Sorry, authentication failed. Invalid api key"),
    "basic_authentication_failed": ("untyped", "Sorry, authentication failed"),
    "api_authorization_failed": ("untyped", "Sorry, the api key is not authorized for this operation"),
    "request_blocked": ("operation_failed", "Sorry, this request is blocked for your site"),
    "resource_not_found": ("invalid_request", "Sorry, we couldn't find that resource"),
    "site_not_found": ("untyped", "Sorry, the site was not found"),
    "http_method_not_supported": ("invalid_request", "Sorry, the HTTP method is not supported for this URL"),
    "invalid_state_for_request": (
        "invalid_request",
        "The resource is not in a state that allows this request",
    ),
    "unable_to_process_request": ("invalid_request", "The request could not be processed"),
    "param_wrong_value": ("invalid_request", "A parameter has a wrong value"),
    "invalid_request": ("invalid_request", "The request is not valid"),
    "payment_processing_failed": ("payment", "The payment could not be processed"),
    "api_request_limit_exceeded": (
        "operation_failed",
        "Sorry, access has been blocked temporarily due to request count exceeding acceptable limits. "
        "Please try after some time.",
    ),
    "lock_timeout": ("operation_failed", "Another request is updating this resource; please retry"),
    "internal_error": ("operation_failed", "Sorry, something went wrong when trying to process the request"),
    "internal_temporary_error": ("operation_failed", "Sorry, a temporary error occurred; please retry"),
    "site_not_ready": (
        "operation_failed",
        "The site is not ready to accept API requests; please retry later",
    ),
    "site_read_only_mode": ("operation_failed", "The site is in read-only mode; please retry later"),
    "db_connection_failure": ("operation_failed", "Sorry, a temporary error occurred; please retry"),
}
STATUS_CODES: Final[Mapping[int, str]] = {
    400: "invalid_request",
    401: "api_authentication_failed",
    403: "api_authorization_failed",
    404: "resource_not_found",
    405: "http_method_not_supported",
    409: "invalid_state_for_request",
    422: "unable_to_process_request",
    429: "api_request_limit_exceeded",
    500: "internal_error",
    502: "internal_temporary_error",
    503: "site_not_ready",
    504: "internal_temporary_error",
}


def _type_for(status: int) -> str:
    """The `type` of a code the table does not know (a fault's own api_error_code)."""
    if status in (401, 403):
        return "untyped"
    return "operation_failed" if status == 429 or status >= 500 else "invalid_request"


class ConnectionDropped(RuntimeError):
    """Raised in-process (httpx ASGITransport, TestClient), where a real server closes the socket."""


class _DroppedConnection(Response):
    """Ends the exchange without a single byte, like a proxy or a server dying mid-request."""

    def __init__(self) -> None:
        super().__init__(status_code=0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            # ASGI has no "abort". uvicorn marks the response started, cannot encode status 0 and
            # writes nothing; returning without a body then makes it close the transport.
            await send({"type": "http.response.start", "status": 0, "headers": []})
        except Exception:  # the server refused the status line: nothing was sent
            return
        raise ConnectionDropped("injected fault: the sandbox dropped this connection")


@dataclass(frozen=True, slots=True)
class Reply:
    """What an API call answers; status 0 drops the connection instead."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] | None = None
    replayed: bool = False

    def response(self) -> Response:
        if self.status == 0:
            return _DroppedConnection()
        return Response(self.body, status_code=self.status, media_type=JSON_MEDIA_TYPE, headers=self.headers)


def json_reply(status: int, body: Json, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, orjson.dumps(body), headers)


def error_body(
    status: int,
    code: str,
    message: str | None = None,
    *,
    param: str | None = None,
    error_code: str | None = None,
) -> Json:
    """A Chargebee error body; parameter errors read "param : message" as Chargebee's do."""
    type_, default = _ERRORS.get(code, (_type_for(status), "Sorry, the request failed"))
    text = message or default
    body: Json = {"message": f"{param} : {text}" if param else text, "type": type_, "api_error_code": code}
    if param:
        body["param"] = param
    # Deprecated attributes that live responses still carry; older clients read them.
    body["error_code"] = error_code or code
    body["error_msg"] = text
    body["http_status_code"] = status
    return body


def error_reply(
    status: int,
    code: str,
    message: str | None = None,
    *,
    param: str | None = None,
    error_code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    return json_reply(status, error_body(status, code, message, param=param, error_code=error_code), headers)


def not_found(resource: str, resource_id: str) -> Reply:
    return error_reply(404, "resource_not_found", f"Sorry, we couldn't find the {resource} {resource_id}")


class ParamError(Exception):
    """A parameter Chargebee would reject with 400: a wrong value, or (`missing`) a blank one."""

    def __init__(self, param: str, message: str, *, missing: bool = False) -> None:
        super().__init__(f"{param} : {message}")
        self.param, self.message = param, message
        # A blank required parameter: api_error_code invalid_request with legacy param_required,
        # as in a captured live answer; a wrong value: param_wrong_value.
        self.code = "invalid_request" if missing else "param_wrong_value"
        self.error_code = "param_required" if missing else "param_wrong_value"

    @classmethod
    def blank(cls, param: str) -> ParamError:
        return cls(param, "cannot be blank", missing=True)

    def reply(self) -> Reply:
        return error_reply(400, self.code, self.message, param=self.param, error_code=self.error_code)
