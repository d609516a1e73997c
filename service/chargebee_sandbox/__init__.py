"""The local Chargebee stand-in (like stripe-mock): invoices, `record_payment`, idempotency, faults.

Faithful to Chargebee's documented API, not to payrelay's client. Everything lives in memory in one
`Sandbox` owned by the app (`app.state.sandbox`); one event loop, so a check and the update it guards
never have an `await` between them.

API, v1 and v2 (HTTP Basic: username = the API key; the password is not checked):
  POST /api/{v1|v2}/invoices/{id}/record_payment   form-encoded
  GET  /api/{v1|v2}/invoices/{id}                   {"invoice"}
  GET  /api/{v1|v2}/invoices?limit=10&offset=       {"list": [{"invoice"}], "next_offset"?}

record_payment checks, in order: API version (404), authentication (401 api_authentication_failed),
rate limit (429 api_request_limit_exceeded + Retry-After), configured latency, injected faults,
then `chargebee-idempotency-key` (replay with `chargebee-idempotency-replayed: true`, or 422 when the
key came with another request), parameters (400 param_wrong_value with `param`), the invoice
(404 resource_not_found), its status (409 invalid_state_for_request unless payment_due/not_paid)
and the amount against amount_due (400). Responses from the idempotency step on are stored under
the key for 30 minutes, errors included; 401, 429 and injected faults are not, because Chargebee
never processed those requests. Error bodies carry `message`, `type` (only for the invalid_request /
payment / operation_failed groups, as documented), `api_error_code`, `param`, and the deprecated
`error_code`, `error_msg`, `error_param`, `http_status_code` that live responses still include.

Sandbox admin (no auth, JSON; errors are problem+json):
  GET    /sandbox/health
  POST   /sandbox/invoices        {"id", "total", "amount_due"?, "currency_code": "USD",
                                   "status": "payment_due", "customer_id"?}
                                  -> 201 {"invoice"} (v2 shape); 409 if the id exists
  POST   /sandbox/invoices/bulk   {"prefix", "count", "total": 1000, "currency_code": "USD",
                                   "status": "payment_due"}
                                  -> 201 {"created", "first", "last"}: ids prefix1..prefixN; 409 if any exists
  GET    /sandbox/requests[?invoice_id=]  -> {"requests": [{"invoice_id", "api_version", "form", "headers",
                                   "status", "replayed", "at"}], "dropped": n}; status 0 = connection dropped
  DELETE /sandbox/requests        -> {"cleared": n}
  POST   /sandbox/faults          {"status"?, "count": 1, "invoice_id"?, "api_error_code"?, "message"?,
                                   "retry_after"?, "latency_ms"?, "disconnect"?, "after_commit"?} -> 201
  GET    /sandbox/faults          -> {"faults": [{...spec, "remaining"}]}
  DELETE /sandbox/faults          -> {"cleared": n}
  PUT    /sandbox/api-key         {"api_key"} -> 204
  POST   /sandbox/reset           -> {"invoices": n}: starting state again (config's key, seeds, empty logs)

A fault applies to the next `count` record_payment calls (for `invoice_id` only, if given): it
sleeps `latency_ms`, then answers `status` with a Chargebee error body (or drops the connection
without a byte when `disconnect`), without recording. Latency alone delays a normal call. With
`after_commit` the payment is recorded and stored under the idempotency key first, and only the
answer is lost: the "did Chargebee get it?" case.

Seeded invoices (SandboxConfig.seed), customer `cust_<invoice id>`:
  INV-1001..INV-1010  USD payment_due, totals 10000 12550 19999 25000 30000 45000 50000 64990 80000 100000
  INV-2001 JPY 150000 payment_due (exponent 0)     INV-3001 BHD 125500 payment_due (exponent 3)
  INV-4001 USD 20000 not_paid
  INV-9001 USD 5000 paid   INV-9002 USD 7500 voided   INV-9003 USD 9000 pending   INV-9004 USD 12000 posted

Modules: `replies` (Reply, error bodies), `payments` (the record_payment form, pure), `invoices`
(invoices, transactions, their JSON, the seeds), `specs` (admin bodies), `state` (`Sandbox`),
`api` and `admin` (the routes), `app` (`create_app`).
"""

from service.chargebee_sandbox.app import create_app
from service.chargebee_sandbox.payments import parse_payment
from service.chargebee_sandbox.replies import ConnectionDropped, ParamError, Reply, error_body
from service.chargebee_sandbox.state import SandboxConfig

__all__ = [
    "ConnectionDropped",
    "ParamError",
    "Reply",
    "SandboxConfig",
    "create_app",
    "error_body",
    "parse_payment",
]
