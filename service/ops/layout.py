"""The frame every ops page shares (header, navigation, sign-out form) and small form helpers."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from service.ops import views
from service.ops.auth import MAX_FORM_BYTES, Operator
from service.ops.operations import BadRequest
from service.ops.templating import Html, Templates, join, tag

NAV = (("/", "Dashboard"), ("/dead-letters", "Dead letters"), ("/lookup", "Lookup"), ("/audit", "Audit"))
Form = dict[str, list[str]]


async def read_form(request: Request) -> Form:
    """An urlencoded form (python-multipart is not a dependency; these forms are small and flat)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise BadRequest("the form is too large")
    return parse_qs(body.decode(errors="replace"), max_num_fields=200)


def first(form: Form, name: str) -> str:
    return (form.get(name) or [""])[0].strip()


class Layout:
    """Renders a page's main content inside the shared frame."""

    def __init__(self, templates: Templates, prefix: str) -> None:
        self.templates = templates
        self.prefix = prefix

    def _nav(self, request: Request, operator: Operator | None) -> Html:
        if operator is None:
            return Html("")
        path = request.url.path
        items = []
        for href, label in NAV:
            current = "page" if (path == href or (href != "/" and path.startswith(href))) else None
            items.append(tag("li", tag("a", label, href=href, aria_current=current)))
        who = (
            "Open access (no admin token; loopback only)"
            if operator.via == "open"
            else f"Signed in as {operator.name}"
        )
        session = join(
            [
                tag("span", who, class_="who"),
                views.hidden("csrf", operator.csrf or ""),
                tag("button", "Sign out", type="submit", class_="link-button")
                if operator.via == "session"
                else "",
            ]
        )
        form = tag("form", session, method="post", action="/logout", class_="session")
        return join([tag("nav", tag("ul", join(items)), aria_label="Main"), form])

    def page(self, request: Request, title: str, main: Html, status: int = 200) -> Response:
        operator: Operator | None = getattr(request.state, "operator", None)
        body = self.templates.render(
            "base",
            title=title,
            csrf=(operator.csrf if operator else "") or "",
            prefix=self.prefix,
            nav=self._nav(request, operator),
            main=main,
        )
        return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    def message(
        self, request: Request, status: int, heading: str, text: str, back: str = "/dead-letters"
    ) -> Response:
        label = "Back to the dead letters" if back == "/dead-letters" else "Back"
        main = self.templates.render("message", heading=heading, message=text, back=back, back_label=label)
        return self.page(request, heading, main, status)
