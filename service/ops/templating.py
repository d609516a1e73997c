"""HTML from `string.Template` files in `templates/`, escaped by default.

A value is escaped when substituted unless it is `Html` (markup built here from escaped parts),
so data from messages, the ledger or the query string cannot inject markup.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path
from string import Template
from typing import Any

TEMPLATES = Path(__file__).parent / "templates"


class Html(str):
    """Markup that is safe to insert as is."""

    __slots__ = ()


def escape(value: Any) -> Html:
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[Any], separator: str = "") -> Html:
    return Html(separator.join(escape(p) for p in parts))


def tag(name: str, content: Any = "", /, **attributes: Any) -> Html:
    """`<name attr="...">content</name>`: `class_` is `class`, `data_x` is `data-x`; None/False omit it."""
    rendered = []
    for key, value in attributes.items():
        if value is None or value is False:
            continue
        attribute = key.rstrip("_").replace("_", "-")
        rendered.append(f" {attribute}" if value is True else f' {attribute}="{escape(value)}"')
    return Html(f"<{name}{''.join(rendered)}>{escape(content)}</{name}>")


class Templates:
    """The page templates, read once when the app is built."""

    def __init__(self, directory: Path = TEMPLATES) -> None:
        self._templates = {p.stem: Template(p.read_text()) for p in directory.glob("*.html")}

    def render(self, template: str, /, **values: Any) -> Html:
        return Html(self._templates[template].substitute({k: escape(v) for k, v in values.items()}))
