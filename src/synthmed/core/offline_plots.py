"""``dvc plots show`` that opens offline: Vega, Vega-Lite and Vega-Embed inlined in the page.

DVC's default page loads the three libraries from a CDN, so its charts stay blank without a
network. ``dvc plots show --html-template FILE`` takes a page with a ``{plot_divs}``
placeholder; DVC puts its CDN ``<script src=...>`` tags only where a ``{scripts}`` placeholder
is. ``offline_template`` writes a page without that placeholder and with the libraries inlined
from the installed ``vl-convert-python`` package (its ``javascript_bundle``), generated when
the command runs: nothing is downloaded and nothing is checked in. ``synthmed plots`` (``make
plots``) uses it.
"""

from __future__ import annotations

import re
from pathlib import Path

# DVC's plot templates declare Vega-Lite v5 specifications: bundle a 5.x compiler.
VEGA_LITE_VERSION = "5.21"

_PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>{title}</title>
    <script type="text/javascript">
{bundle}
    </script>
    <style>
        body {{ font-family: system-ui, sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    <p>{note}</p>
    {plot_divs}
</body>
</html>
"""

_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?\s*(?:https?:)?//", re.IGNORECASE)


def javascript_bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed as one classic script defining ``vegaEmbed``, ``vega``, ``vegaLite``."""
    try:
        import vl_convert
    except ImportError as exc:  # a dependency of the project: the environment is incomplete
        raise RuntimeError("vl-convert-python is not installed; run `make setup` (it is a project dependency "
                           "in pyproject.toml).") from exc
    snippet = "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;"
    bundle = vl_convert.javascript_bundle(snippet, vl_version=VEGA_LITE_VERSION)
    # inside an inline <script>, "</script" would end the element early
    return bundle.replace("</script", "<\\/script")


def offline_template(title: str = "synthmed: DVC plots (offline)") -> str:
    """An HTML template for ``dvc plots show --html-template`` with the libraries inlined."""
    note = ("Vega, Vega-Lite and Vega-Embed are inlined in this page (from vl-convert-python): it opens "
            "without a network.")
    # str.replace, not str.format: the bundle is full of braces and DVC fills {plot_divs} / {refresh_tag}
    return (_PAGE.replace("{{", "{").replace("}}", "}")
            .replace("{title}", title).replace("{note}", note).replace("{bundle}", javascript_bundle()))


def remote_scripts(html: str) -> list[str]:
    """Every ``<script src=...>`` tag of ``html`` that loads from the network (http, https or ``//``)."""
    return [match.group(0) for match in _REMOTE_SCRIPT.finditer(html)]


def write_offline_template(path: Path) -> Path:
    path.write_text(offline_template(), encoding="utf-8")
    return path
