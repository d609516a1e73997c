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

# api_error_code -> (type, message). Only the invalid_request / payment / operation_failed groups
# carry a `type`; authentication, rate-limit and server errors have none.
_ERRORS: Final[Mapping[str, tuple[str | None, str]]] = {
    "api_authentication_failed": (None, "Sorry, authentication failed. Invalid api key"),
    "api_authorization_failed": (None, "Sorry, the api key is not authorized for this operation"),
    "resource_not_found": ("invalid_request", "Sorry, we couldn't find that resource"),
    "invalid_state_for_request": (
        "invalid_request",
        "The resource is not in a state that allows this request",
    ),
    "param_wrong_value": ("invalid_request", "A parameter has a wrong value"),
    "invalid_request": ("invalid_request", "The request is not valid"),
    "http_method_not_supported": (None, "Sorry, the HTTP method is not supported for this URL"),
    "api_request_limit_exceeded": (
        None,
        "Sorry, access has been blocked temporarily due to request count exceeding acceptable limits. "
        "Please try after some time.",
    ),
    "lock_timeout": (None, "Another request is updating this resource; please retry"),
    "payment_processing_failed": ("payment", "The payment could not be processed"),
    "internal_error": (None, "Sorry, something went wrong when trying to process the request"),
    "internal_temporary_error": (None, "Sorry, a temporary error occurred; please retry"),
    "site_not_ready": (None, "The site is not ready to accept API requests; please retry later"),
}
STATUS_CODES: Final[Mapping[int, str]] = {
    400: "invalid_request",
    401: "api_authentication_failed",
    403: "api_authorization_failed",
    404: "resource_not_found",
    405: "http_method_not_supported",
    409: "invalid_state_for_request",
    422: "invalid_request",
    429: "api_request_limit_exceeded",
    500: "internal_error",
    502: "internal_temporary_error",
    503: "site_not_ready",
    504: "internal_temporary_error",
}


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
    type_, default = _ERRORS.get(code, (None, "Sorry, the request failed"))
    text = message or default
    body: Json = {"message": f"{param} : {text}" if param else text}
    if type_:
        body["type"] = type_
    body["api_error_code"] = code
    if param:
        body["param"] = param
    # Deprecated attributes that live responses still carry; older clients read them.
    body["error_code"] = error_code or code
    body["error_msg"] = text
    if param:
        body["error_param"] = param
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


def invoice_not_found(invoice_id: str) -> Reply:
    return error_reply(404, "resource_not_found", f"Sorry, we couldn't find the invoice {invoice_id}")


class ParamError(Exception):
    """A record_payment parameter Chargebee would reject with 400 param_wrong_value."""

    def __init__(self, param: str, message: str, error_code: str = "param_wrong_value") -> None:
        super().__init__(f"{param} : {message}")
        self.param, self.message, self.error_code = param, message, error_code

    def reply(self) -> Reply:
        return error_reply(
            400, "param_wrong_value", self.message, param=self.param, error_code=self.error_code
        )
