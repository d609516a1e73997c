"""The frame every ops page shares (`base.html`: header, navigation, sign-out form), and form helpers.

`templates()` builds the one Jinja2 environment the app renders with; `Layout` hands each page
template its view model together with the frame's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from service.ops.auth import MAX_FORM_BYTES, Operator
from service.ops.operations import BadRequest

TEMPLATES = Path(__file__).parent / "templates"
NAV = (
    ("/", "Dashboard"),
    ("/dead-letters", "Dead letters"),
    ("/review", "Review"),
    ("/lookup", "Lookup"),
    ("/audit", "Audit"),
)
NO_STORE = {"Cache-Control": "no-store"}
Form = dict[str, list[str]]


def templates(directory: Path = TEMPLATES) -> Jinja2Templates:
    """The page templates, escaping every value (as `Jinja2Templates(directory=...)` would).

    Messages, ledger entries and query strings end up on the pages, so autoescape is what keeps
    their text from becoming markup. Undefined names are errors, not blanks, so a template typo
    fails a test instead of showing an empty cell.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        autoescape=jinja2.select_autoescape(),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return Jinja2Templates(env=env)


async def read_form(request: Request) -> Form:
    """An urlencoded form (python-multipart is not a dependency; these forms are small and flat).

    Read as it streams in and refused as soon as it passes MAX_FORM_BYTES: a huge body (chunked,
    so no Content-Length to refuse it by) must not be held in memory first.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise BadRequest("the form is too large")
        chunks.append(chunk)
    return parse_qs(b"".join(chunks).decode(errors="replace"), max_num_fields=200)


def first(form: Form, name: str) -> str:
    return (form.get(name) or [""])[0].strip()


@dataclass(frozen=True, slots=True)
class NavItem:
    href: str
    label: str
    current: bool


@dataclass(frozen=True, slots=True)
class Frame:
    """What `base.html` shows around a page. `who` is None when nobody is signed in (no navigation)."""

    prefix: str
    csrf: str
    nav: tuple[NavItem, ...]
    who: str | None
    sign_out: bool


def frame(path: str, operator: Operator | None, prefix: str) -> Frame:
    if operator is None:
        return Frame(prefix, "", (), None, False)
    nav = tuple(
        NavItem(href, label, path == href or (href != "/" and path.startswith(href))) for href, label in NAV
    )
    who = (
        "Open access (no admin token; loopback only)"
        if operator.via == "open"
        else f"Signed in as {operator.name}"
    )
    return Frame(prefix, operator.csrf or "", nav, who, operator.via == "session")


class Layout:
    """Renders page templates (which extend `base.html`) and the fragments pages refresh from."""

    def __init__(self, templates: Jinja2Templates, prefix: str) -> None:
        self.templates = templates
        self.prefix = prefix

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        operator: Operator | None = getattr(request.state, "operator", None)
        context["frame"] = frame(request.url.path, operator, self.prefix)
        return self.templates.TemplateResponse(
            request, template, context, status_code=status, headers=NO_STORE
        )

    def fragment(self, request: Request, template: str, **context: Any) -> Response:
        """A partial a page includes, alone: no frame, for a script to swap in."""
        return self.templates.TemplateResponse(request, template, context, headers=NO_STORE)

    def message(
        self, request: Request, status: int, heading: str, text: str, back: str = "/dead-letters"
    ) -> Response:
        return self.page(request, "message.html", status, heading=heading, message=text, back=back)
