"""Fail when a built documentation page still shows a raw Sphinx role (``:class:`X```).

    python docs/check_site.py SITE_DIR

Run by ``docs/build.sh`` after ``mkdocs build``: the API pages read the docstrings' roles
as cross-references (``docs/sphinx_roles.py``); a role that reaches the HTML as text - a new
role kind, a role in a Markdown page, the extension not loaded - is a rendering bug. Prints
each page and the roles it shows, exit status 1; nothing and 0 when there is none.
"""
from __future__ import annotations

import html
import pathlib
import re
import sys
from typing import Dict, List

__all__ = ["RAW_ROLE", "raw_roles", "main"]

#: A role as it shows on a page: ``:class:`` before a code span or a backquote (mkdocs
#: turns the role's backquotes into <code>), in any of Sphinx's Python-domain roles.
RAW_ROLE = re.compile(
    r":(?:py:)?(?:data|mod|class|func|meth|attr|exc|obj|const|type|ref|doc|term):(?:<code>[^<]*</code>|`[^`]*`)"
)


def _visible_text(page: str) -> str:
    # Code blocks may show a role on purpose (this very check's docs); the rest is prose.
    page = re.sub(r"<pre\b.*?</pre>", "", page, flags=re.S)
    return html.unescape(re.sub(r"<(?!/?code\b)[^>]+>", "", page))


def raw_roles(site_dir: str) -> Dict[str, List[str]]:
    """``{page: [raw roles shown]}`` of the HTML pages under ``site_dir``."""
    found = {}
    for page in sorted(pathlib.Path(site_dir).rglob("*.html")):
        hits = RAW_ROLE.findall(_visible_text(page.read_text(encoding="utf-8", errors="replace")))
        if hits:
            found[str(page.relative_to(site_dir))] = hits
    return found


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        print("usage: python docs/check_site.py SITE_DIR", file=sys.stderr)
        return 2
    found = raw_roles(args[0])
    if not found:
        return 0
    total = sum(len(v) for v in found.values())
    print(f"docs: {total} raw Sphinx role(s) on {len(found)} page(s) (docs/sphinx_roles.py should have made "
          "them links):", file=sys.stderr)
    for page, hits in found.items():
        print(f"  {page}: {', '.join(hits[:5])}{' ...' if len(hits) > 5 else ''}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
