"""mkdocs hooks: links that leave docs/ still work; docstrings' Sphinx roles render.

The Markdown files are written to be read on a forge or in a clone, so they link to files
anywhere in the repository. On the site, a link to README.md goes to the home page (which
includes it); a link to any other file outside docs/ goes to ``repo_url`` when mkdocs.yml
sets it, and otherwise becomes the file's path as code.

The docstrings cross-reference with Sphinx roles (``:class:`Settings```), which
mkdocstrings leaves as text; in the rendered page each becomes its code, linked to the
object's entry when the page has one (``id="ccrotate.Settings"``).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

ROLE = re.compile(r":(?:class|func|meth|attr|exc|mod|data|obj):<code>(?P<tilde>~?)"
                  r"(?P<name>[\w.]+)</code>")
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)#\s]+)(?P<anchor>#[^)]*)?\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs = Path(config["docs_dir"]).resolve()
    root = docs.parent
    here = (docs / page.file.src_uri).parent
    repo = (config.get("repo_url") or "").rstrip("/")

    def rewrite(match: re.Match[str]) -> str:
        target = match["target"]
        if "://" in target or target.startswith(("mailto:", "/")):
            return match[0]
        path = (here / target).resolve()
        if path.is_relative_to(docs) or not path.is_relative_to(root) or not path.exists():
            return match[0]
        anchor = match["anchor"] or ""
        relative = path.relative_to(root).as_posix()
        if relative == "README.md":
            index = posixpath.relpath("index.md", posixpath.dirname(page.file.src_uri) or ".")
            return f"[{match['text']}]({index}{anchor})"
        if repo:
            return f"[{match['text']}]({repo}/blob/main/{relative}{anchor})"
        text = match["text"]
        return text if text.strip("`") == relative else f"{text} (`{relative}`)"

    return LINK.sub(rewrite, markdown)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    def role(match: re.Match[str]) -> str:
        name = match["name"]
        shown = name.rsplit(".", 1)[-1] if match["tilde"] else name
        target = name if name.startswith("ccrotate.") else f"ccrotate.{name}"
        if f'id="{target}"' in html:
            return f'<a href="#{target}"><code>{shown}</code></a>'
        return f"<code>{shown}</code>"

    return ROLE.sub(role, html)
