"""A griffe extension: the docstrings' Sphinx roles become cross-reference links on the API pages.

The library's docstrings name other objects the Sphinx way, ``:class:`~pkg.mod.Name```,
``:func:`measure```, ``:data:`TRANSFORMS```. mkdocstrings renders Markdown, where such a
role would show as raw text. Once a package is loaded, this extension rewrites every role in
its docstrings into an mkdocs-autorefs reference::

    :class:`~lightning_equivariance.report.MeasureReport`
    ->  <autoref identifier="lightning_equivariance.report.MeasureReport" optional><code>MeasureReport</code></autoref>

The target is looked up as Sphinx would: a dotted path from the packages loaded, else relative
to the object that holds the docstring, then to its parents (class, module, package). A leading
``~`` shows the last name only; functions and methods get ``()``; ``:meth:`title <target>```
shows its title. The reference is *optional*:
a target that no API page renders shows as code text (no link, no warning), so the docstrings
need no change when a page leaves an object out.

Used by mkdocs.yml (``extensions: [docs/sphinx_roles.py]``); ``docs/build.sh`` fails when a
built page still shows a raw role.
"""
from __future__ import annotations

import html
import re
from typing import Any, Iterator, Optional

try:
    from griffe import Extension
except ImportError:  # tests/test_docs_roles.py reads convert() without the docs tools installed
    Extension = object

__all__ = ["SphinxRoles", "ROLE", "convert"]

#: A Sphinx cross-reference role in the Python domain: ``:class:`~a.b.C```, ``:py:func:`f```.
ROLE = re.compile(
    r":(?:py:)?(?P<role>data|mod|class|func|meth|attr|exc|obj|const|type):`"
    r"(?:(?P<title>[^`<]+?)\s*<(?P<titled>~?[\w.]+)>|(?P<tilde>~?)(?P<target>[\w.]+)(?:\(\))?)`"
)

_CALLABLE_ROLES = {"func", "meth"}


def _lookup(scope: Any, path: str) -> Optional[Any]:
    """The object at ``path`` relative to ``scope`` (a griffe Object), or None."""
    try:
        return scope[path]
    except Exception:  # noqa: BLE001 - KeyError, AliasResolutionError, ...: not found from here
        return None


def _scopes(obj: Any) -> Iterator[Any]:
    while obj is not None:
        yield obj
        obj = obj.parent


def resolve(obj: Any, target: str, collection: Any) -> Optional[str]:
    """The canonical path of ``target`` as named in ``obj``'s docstring, or None when unknown."""
    found = None
    head = target.split(".", 1)[0]
    if collection is not None and head in collection.members:
        found = _lookup(collection, target)
    if found is None:
        for scope in _scopes(obj):
            found = _lookup(scope, target)
            if found is not None:
                break
    if found is None:
        return None
    try:
        return found.canonical_path
    except Exception:  # noqa: BLE001 - an alias whose target is outside the loaded packages
        return getattr(found, "target_path", None) or found.path


def convert(text: str, resolve_target=lambda target: None) -> str:
    """``text`` with every Sphinx role replaced by an optional autoref; ``resolve_target(target)``
    gives the identifier (None: the target as written)."""

    def replace(match: re.Match) -> str:
        if match["titled"]:  # :meth:`the title <pkg.mod.Name.method>`: the title as written
            target, shown = match["titled"].lstrip("~"), match["title"]
        else:
            target = match["target"]
            shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
            if match["role"] in _CALLABLE_ROLES:
                shown += "()"
        identifier = resolve_target(target) or target
        return (f'<autoref identifier="{html.escape(identifier)}" optional>'
                f"<code>{html.escape(shown)}</code></autoref>")

    return ROLE.sub(replace, text)


def _objects(obj: Any) -> Iterator[Any]:
    """``obj`` and every object defined in it (aliases are documented where they point)."""
    yield obj
    for member in list(obj.members.values()):
        if not member.is_alias:
            yield from _objects(member)


class SphinxRoles(Extension):
    """Rewrite the Sphinx roles of a loaded package's docstrings into autorefs (see the module)."""

    def on_package(self, *, pkg: Any, loader: Any = None, **kwargs: Any) -> None:
        collection = getattr(loader, "modules_collection", None)
        for obj in _objects(pkg):
            docstring = obj.docstring
            if docstring is None or ":" not in docstring.value:
                continue
            docstring.value = convert(docstring.value, lambda target, obj=obj: resolve(obj, target, collection))

    # griffe < 1.x names the same event on_package_loaded
    on_package_loaded = on_package
