"""The local Chargebee stand-in (like stripe-mock): invoices, customers, `record_payment`, reads, faults.

Faithful to Chargebee's documented API, not to payrelay's client. Everything lives in memory in one
`Sandbox` owned by the app (`app.state.sandbox`); one event loop, so a check and the update it guards
never have an `await` between them. Sources, as in ../shared/chargebee-facts.md: OAS-v1 and OAS-v2
(chargebee/openapi specs), PY and NODE (the official SDKs), REF (apidocs.chargebee.com pages), [S] a
secondary source or captured answer, [?] guessed.

API, v1 and v2 (HTTP Basic: username = the API key; the password is not checked):
  POST /api/{v}/invoices/{id}/record_payment   form-encoded -> {"invoice", "transaction"}
  GET  /api/{v}/invoices/{id}                   -> {"invoice"}
  GET  /api/{v}/invoices                        -> {"list": [{"invoice"}], "next_offset"?}
  GET  /api/{v}/transactions/{id}               -> {"transaction"}  (REF retrieve a transaction)
  GET  /api/{v}/transactions                    -> {"list": [{"transaction"}], "next_offset"?}
  GET  /api/{v}/customers/{id}                  -> {"customer"}
  GET  /api/{v}/customers                       -> {"list": [{"customer"}], "next_offset"?}
  GET  /api/{v}/customers/{id}/invoices         -> {"list": [{"invoice"}], "next_offset"?}  (list
       invoices for a customer, PY/NODE invoices_for_customer: limit and offset only; its invoices
       in creation order; an unknown customer is 404 resource_not_found, [?] see reads.py)
Every call passes, in order: the API version (404), authentication (401 api_authentication_failed),
the rate limit (429 api_request_limit_exceeded + Retry-After), configured latency, then faults
armed for its operation; then the call itself. Unknown routes and methods under /api answer
Chargebee-shaped 404 resource_not_found / 405 http_method_not_supported.

record_payment, what it copies and from where:
- Statuses that take a payment: v1 payment_due, not_paid (OAS-v1); v2 payment_due, posted, not_paid
  (OAS-v2). Others: 409 invalid_state_for_request, type invalid_request (OAS 409 schema), legacy
  error_code invalid_invoice_state ([?] inferred from an older v2 rendering, facts §2).
- Effects (OAS-v2 description): amount_due drops by the amount; the status becomes paid (with
  paid_at / v1 paid_on = the transaction date) only when amount_due reaches 0, otherwise it stays as
  it was (not_paid stays not_paid, posted stays posted). v1 the same ([?] OAS-v1 does not say).
- Overpayment (OAS-v2: "the excess is added to the customer's excess_payments"): amount_due is
  applied, the invoice is paid, the transaction keeps the full `amount` with `amount_unused` = the
  excess (OAS-v1/v2 Transaction.amount_unused: "not been invoiced yet and is therefore added to
  excess_payments") and linked_invoices[].applied_amount = what was applied; the customer's
  `excess_payments` grows by the excess. v1 the same ([?] guessed). amount_paid counts the applied
  part only ([?]: OAS says "sum of linked_payments[].txn_amount", which would exceed the total).
- No amount: the whole amount_due (OAS-v1/v2). A payment of 0, or none on an invoice with nothing
  due: 400 on the amount ([?]; v2's minimum is 0 in OAS-v2).
- Parameters (OAS-v1/v2): v1 payment_method and paid_at required; v2 transaction[payment_method]
  required, transaction[date] optional (default: now, [?] the default is not stated). payment_method
  is the endpoint's enum: v1 cash, check, bank_transfer, direct_debit, other (OAS-v1); v2 cash, check,
  bank_transfer, other, custom, tamara, qpay, blik, fpx, wero, p24 (OAS-v2) plus app_store,
  play_store, dana, touch_n_go (NODE). reference_number <= 100 chars, memo/comment <= 300 (OAS).
  A blank required parameter: 400 api_error_code invalid_request, error_code param_required,
  "<param> : cannot be blank" ([S] chargebee-python #54); a wrong value: 400 param_wrong_value with
  `param` (OAS 400 enum). Only form bodies carry parameters ([S] #54: a JSON body is all blank).
  transaction[status] failure/late_failure is not implemented: every payment is a success.
- Idempotency (REF idempotency page): `chargebee-idempotency-key` (<= 100 chars, else 400), answers
  stored 30 minutes and replayed with `chargebee-idempotency-replayed: true`; the same key with
  another request is 422 unable_to_process_request, type invalid_request (OAS 422 schema). Errors
  from the idempotency step on are stored too ([?] not established); 401, 429 and injected faults
  are not, because Chargebee never processed those requests.

JSON, v1 vs v2 (shapes.py): v2 follows PY's response classes and a captured v2 payload ([S]);
v1 follows OAS-v1's schemas, which declare no object/deleted/resource_version/updated_at, so the
sandbox leaves them out (a live v1 answer may carry more: [?]).
  invoice  both: id customer_id recurring status price_type currency_code tax sub_total amount_paid
                 amount_adjusted credits_applied amount_due
           v1:   amount, start_date = end_date (the invoice date), paid_on, linked_transactions[]
                 {txn_id applied_amount applied_at txn_type txn_status txn_date txn_amount}
           v2:   total, date, due_date, write_off_amount, amount_to_collect, paid_at, updated_at,
                 resource_version, deleted, object "invoice", linked_payments[]
                 {txn_id applied_amount applied_at txn_status txn_date txn_amount}
           v1 shows `posted` as is, though v1's status enum lacks it ([?]).
  transaction both: id customer_id payment_method reference_number? gateway "not_applicable"
                 type "payment" date currency_code amount amount_unused status "success"
                 linked_invoices[] {invoice_id applied_amount applied_at invoice_date ...} linked_refunds []
           v1:   linked_invoices[].invoice_amount
           v2:   linked_invoices[].invoice_total, .invoice_status; updated_at resource_version
                 deleted object "transaction"
  customer both: id first_name? last_name? email? company? auto_collection "off" ([?])
                 allow_direct_debit created_at taxability refundable_credits excess_payments
           v1:   account_credits
           v2:   promotional_credits unbilled_charges net_term_days updated_at resource_version
                 deleted object "customer"

Lists (REF list operations): `limit` 1..100 (default 10), `offset` = the previous `next_offset`
(present only while more remain; opaque to clients), creation order unless `sort_by[asc|desc]`.
Anything a list cannot honour answers 400 param_wrong_value naming it ([?] Chargebee's answer to an
unknown filter is not established; refusing means a client's typo never passes silently):
  v2 invoices      id/customer_id [is|in], status [is|in], date [after|before|between], total/
                   amount_due [is|is_not|lt|lte|gt|gte|between], sort_by date|updated_at
                   (REF list invoices, NODE Invoice.ListInputParam; no due_date filter exists)
  v2 transactions  id/customer_id [is|in], reference_number [is], amount [is|is_not|lt|lte|gt|gte|
                   between], payment_method/type/status [is|in], sort_by date|updated_at
                                                                         (REF list transactions)
  v2 customers     id [is|in], first_name/last_name/email/company [is], sort_by created_at|updated_at
                                                                         (REF list customers)
  v2 all           include_deleted=true|false (accepted; nothing is ever deleted)
  v1 invoices      only limit, offset, paid_on_after (paid at/after, sorted by paid_on) (OAS-v1)
  customer's invoices, v1 and v2: only limit, offset (PY InvoicesForCustomerParams)
  v1 transactions, v1 customers: only limit, offset ([?] not checked; v1 has no v2-style filters
                   on list invoices, so the sandbox refuses them on every v1 list)
`in` and `between` take a list written as Chargebee takes it, `["a","b"]` (or `[a,b]`); `between`
includes both ends, `after`/`before` exclude the instant ([?]). Operators Chargebee documents for a
field but the sandbox lacks (string is_not, starts_with, not_in, is_present; timestamp on) are 400
too, saying so; enum values are checked ([?]).

Errors (OAS error schemas; facts §3): every body has `message`, `type`, `api_error_code`, `param`
when a parameter is at fault, and the legacy `error_code`, `error_msg`, `http_status_code` ([S]).
type: 400/404/405/409/422 invalid_request (payment_processing_failed: payment); 401 and 403
api_authorization_failed: untyped; 429 and 5xx: operation_failed (OAS 503 allows invalid_request
too; which 503 code gets which is [?]). `error_param` is not sent ([?] never observed).

Sandbox admin (no auth, JSON; errors are problem+json):
  GET    /sandbox/health
  POST   /sandbox/invoices        {"id", "total", "amount_due"?, "currency_code": "USD", "status":
                                   "payment_due", "customer_id"?, "date"? (unix seconds, default 20
                                   days ago)} -> 201 {"invoice"} (v2 shape); 409 if the id exists; the
                                   customer (default cust_<id>) is created if missing
  POST   /sandbox/invoices/bulk   {"prefix", "count", "total": 1000, "currency_code": "USD",
                                   "status": "payment_due", "customer_id"? (one for all; default
                                   cust_<id> each)} -> 201 {"created", "first", "last"}
  POST   /sandbox/customers       {"id", "company"?, "first_name"?, "last_name"?, "email"?}
                                  -> 201 {"customer"} (v2 shape); 409 if it exists
  GET    /sandbox/requests[?operation=&invoice_id=]  -> {"requests": [...], "dropped": n}
  DELETE /sandbox/requests        -> {"cleared": n}
  POST   /sandbox/faults          {"status"?, "count": 1, "operation": "record_payment", "invoice_id"?,
                                   "api_error_code"?, "message"?, "retry_after"?, "latency_ms"?,
                                   "disconnect"?, "unreadable"?, "after_commit"?} -> 201 {"fault"}
  GET    /sandbox/faults          -> {"faults": [{...spec, "remaining"}]}
  DELETE /sandbox/faults          -> {"cleared": n}
  PUT    /sandbox/api-key         {"api_key"} -> 204
  POST   /sandbox/reset           -> {"invoices": n}: starting state again (config's key, seeds and
                                   their customers, the demo book if configured, no transactions,
                                   faults, keys or log)

The request log holds every API call, newest `request_log_limit` kept (`dropped` counts the rest).
Each entry: "operation" (record_payment, retrieve_invoice, list_invoices, list_transactions,
retrieve_transaction, retrieve_customer, list_customers, invoices_for_customer), "api_version",
"headers" (chargebee-*, content-type, traceparent; never authorization), "status" (0 = connection
dropped), "replayed", "at", and "invoice_id" / "customer_id" when the path names one;
record_payment adds "form", reads "query".
GET /sandbox/requests answers record_payment entries unless `operation` names another or is `all`.

A fault applies to the next `count` calls of its `operation`: record_payment (default),
retrieve_invoice, list_invoices, invoices_for_customer, list_transactions, retrieve_transaction,
customers (retrieve and list), reads (every GET API call) or any; with `invoice_id`, only to
calls naming that invoice (record_payment, retrieve invoice). It sleeps `latency_ms`, then answers
`status` with a Chargebee error body (or drops the connection without a byte when `disconnect`), without
recording; `unreadable` answers 200 with an HTML page instead of Chargebee's JSON, and a `status`
of 3xx redirects to /moved (both what a misbehaving proxy does, not Chargebee itself); latency
alone delays a normal call. With `after_commit` (record_payment only) the
payment is recorded and stored under the idempotency key first and only the answer is lost: the
"did Chargebee get it?" case.

Seeded invoices (SandboxConfig.seed), each with its customer `cust_<invoice id>`:
  INV-1001..INV-1010  USD payment_due, totals 10000 12550 19999 25000 30000 45000 50000 64990 80000 100000
  INV-2001 JPY 150000 payment_due (exponent 0)     INV-3001 BHD 125500 payment_due (exponent 3)
  INV-4001 USD 20000 not_paid
  INV-9001 USD 5000 paid   INV-9002 USD 7500 voided   INV-9003 USD 9000 pending   INV-9004 USD 12000 posted
With SandboxConfig.demo_book (`payrelay sandbox --demo-book`, `payrelay dev`), reset also creates
demo_book's payers for cash application, with company, names and email, and their invoices dated
relative to the sandbox clock: cust_globex (GX-1001..1004 USD), cust_initech (IT-2001, IT-2002 USD,
both 500.00), cust_umbrella (UM-3001 EUR), cust_hooli (HO-4001 paid, HO-4002 USD).

Modules: `replies` (Reply, error bodies), `resources` (invoices, transactions, customers, seeds),
`shapes` (their v1/v2 JSON), `payments` (the record_payment form), `listing` (list queries) and
`list_specs` (what each list accepts), `gate` (version, auth, rate limit), `idempotency`, `specs`
(admin bodies, faults), `state` (`Sandbox`), `demo_book` (cash application's payers, data),
`recording` (record_payment's rules), `api`, `reads` and `admin` (the routes), `app` (`create_app`).
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
