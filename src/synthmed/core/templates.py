"""Every document synthmed generates (report, dataset card, reader sheet) is a Jinja2 template in
``synthmed/templates/``; this module renders them.

``render("dataset_card.md.j2", ...)`` escapes nothing (Markdown, text); templates whose name
ends in ``.html.j2`` are rendered with HTML autoescaping. Undefined variables are errors.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2

TEMPLATE_PACKAGE = ("synthmed", "templates")


@cache
def _environment(html: bool) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader(*TEMPLATE_PACKAGE), autoescape=html,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render(name: str, **context: Any) -> str:
    """Render the template ``name`` of ``synthmed/templates`` with ``context``."""
    return _environment(name.endswith(".html.j2")).get_template(name).render(**context)
