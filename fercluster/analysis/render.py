"""One report, two renderings: Markdown (PNG files beside it) and self-contained HTML (PNGs
embedded as base64, so the file opens offline and can be mailed around)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fercluster.analysis.tables import markdown_table

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #333}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}
figure{display:inline-block;vertical-align:top;margin:.6em .6em .6em 0;max-width:100%}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}
code{background:#f2f2f2;padding:0 .2em}.note{color:#8a6d3b;background:#fcf8e3;padding:.1em .8em;margin:.8em 0}
"""


@dataclass
class Section:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def text(self, s: str) -> "Section":
        self.blocks.append(("text", s))
        return self

    def note(self, s: str) -> "Section":
        self.blocks.append(("note", s))
        return self

    def table(self, rows: list[dict[str, Any]], caption: str = "") -> "Section":
        self.blocks.append(("table", rows, caption))
        return self

    def image(self, path: Path, caption: str) -> "Section":
        self.blocks.append(("image", Path(path), caption))
        return self

    def code(self, s: str) -> "Section":
        self.blocks.append(("code", s))
        return self


def to_markdown(title: str, sections: list[Section], base: Path) -> str:
    out = [f"# {title}\n"]
    for s in sections:
        out.append(f"\n## {s.title}\n")
        for b in s.blocks:
            kind = b[0]
            if kind == "text":
                out.append(b[1] + "\n")
            elif kind == "note":
                out.append(f"> {b[1]}\n")
            elif kind == "table":
                out.append(markdown_table(b[1]) + (f"\n_{b[2]}_\n" if b[2] else ""))
            elif kind == "image":
                out.append(f"![{b[2]}]({_rel(b[1], base)})\n\n_{b[2]}_\n")
            elif kind == "code":
                out.append("```\n" + b[1].rstrip() + "\n```\n")
    return "\n".join(out)


def to_html(title: str, sections: list[Section]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>", _toc(sections)]
    for i, s in enumerate(sections):
        body.append(f'<h2 id="s{i}">{html.escape(s.title)}</h2>')
        for b in s.blocks:
            kind = b[0]
            if kind == "text":
                body.append(_markdown(b[1]))
            elif kind == "note":
                body.append(f'<div class="note">{_markdown(b[1])}</div>')
            elif kind == "table":
                body.append(_html_table(b[1], b[2]))
            elif kind == "image":
                body.append(_figure(b[1], b[2]))
            elif kind == "code":
                body.append(f"<pre>{html.escape(b[1])}</pre>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _toc(sections: list[Section]) -> str:
    items = "".join(f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections))
    return f"<ul>{items}</ul>"


def _markdown(text: str) -> str:
    """A text block's Markdown as HTML: CommonMark through markdown-it-py (rich's own Markdown
    parser), raw HTML in the text escaped, never passed through."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).render(text)


def _html_table(rows: list[dict[str, Any]], caption: str) -> str:
    if not rows:
        return "<p><i>(none)</i></p>"
    head = list(rows[0])
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[h]))}</td>" for h in head) + "</tr>" for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<tr>{th}</tr>{trs}</table>"


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _rel(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
