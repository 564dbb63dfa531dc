"""The browser as HTML: a fragment to embed (report.html) or a whole page (``skillsweep view``).

Script, style and data are inlined, so the page works from ``file://`` with no network.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

ASSETS = Path(__file__).parent / "assets"


def _script_json(payload: dict) -> str:
    # "</" would end the <script> element early; "<\/" is the same string to JSON.parse.
    return json.dumps(payload, ensure_ascii=False, default=str).replace("</", "<\\/")


def view_fragment(payload: dict) -> str:
    """The run browser as an HTML fragment (styles, data, script) to embed in a page or report."""
    css = (ASSETS / "view.css").read_text(encoding="utf-8")
    js = (ASSETS / "view.js").read_text(encoding="utf-8")
    return (f"<style>{css}</style><div id='ssb'><p>Loading {len(payload['cells'])} cells…</p></div>"
            f"<script type='application/json' id='ssb-data'>{_script_json(payload)}</script><script>{js}</script>")


def render_page(payload: dict) -> str:
    """The run browser as a standalone HTML page."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'><title>skillsweep: {html.escape(payload['run'])}"
            f"</title></head><body>{view_fragment(payload)}</body></html>\n")
