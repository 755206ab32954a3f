"""The API pages read the docstrings' Sphinx roles as links (issue 26).

``docs/sphinx_roles.py`` (a griffe extension) turns ``:class:`~pkg.mod.Name``` into an optional
mkdocs-autorefs reference; ``docs/check_site.py`` (run by ``docs/build.sh``) fails a build whose
pages still show a raw role. The build itself runs in CI (``.ci/run``: ``docs/build.sh``).
"""
import importlib.util
import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
PACKAGE = DOCS.parent / "lightning_equivariance"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"docs_{name}", DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


roles = _load("sphinx_roles")
check_site = _load("check_site")


def test_roles_become_optional_autorefs():
    known = {"MeasureReport": "lightning_equivariance.report.MeasureReport"}
    text = ("See :class:`~lightning_equivariance.report.MeasureReport`, :func:`measure`, "
            ":py:meth:`MeasureReport.parts`, :data:`TRANSFORMS` and :class:`MeasureReport`.")
    out = roles.convert(text, known.get)
    assert out == (
        'See <autoref identifier="lightning_equivariance.report.MeasureReport" optional><code>MeasureReport</code>'
        '</autoref>, <autoref identifier="measure" optional><code>measure()</code></autoref>, '
        '<autoref identifier="MeasureReport.parts" optional><code>MeasureReport.parts()</code></autoref>, '
        '<autoref identifier="TRANSFORMS" optional><code>TRANSFORMS</code></autoref> and '
        '<autoref identifier="lightning_equivariance.report.MeasureReport" optional><code>MeasureReport</code>'
        '</autoref>.'
    )
    assert roles.convert("no roles, `code` and :not-a-role:`x`") == "no roles, `code` and :not-a-role:`x`"
    titled = roles.convert(":meth:`MeasureReport.plot() <lightning_equivariance.report.MeasureReport.plot>`")
    assert titled == ('<autoref identifier="lightning_equivariance.report.MeasureReport.plot" optional>'
                      "<code>MeasureReport.plot()</code></autoref>")


def test_every_role_in_the_library_is_one_the_extension_reads():
    """The roles the docstrings use are all of the kinds ROLE matches (none left as text)."""
    any_role = re.compile(r":(?:py:)?[a-z]+:`[^`]+`")
    unread = []
    count = 0
    for path in list(PACKAGE.rglob("*.py")) + list((DOCS.parent / "tb_plugin").rglob("*.py")):
        for hit in any_role.findall(path.read_text()):
            count += 1
            if not roles.ROLE.fullmatch(hit):
                unread.append((path.name, hit))
    assert count > 100 and unread == [], unread


def _site(tmp_path, pages):
    for name, body in pages.items():
        page = tmp_path / name
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(f"<html><body>{body}</body></html>")
    return str(tmp_path)


def test_check_site_fails_on_a_raw_role(tmp_path, capsys):
    site = _site(tmp_path, {
        "api/index.html": "<p>Returns a :class:<code>~lightning_equivariance.report.MeasureReport</code>.</p>",
        "ok/index.html": '<p><a class="autorefs" href="#x"><code>MeasureReport</code></a></p>',
    })
    shown = ":class:<code>~lightning_equivariance.report.MeasureReport</code>"
    assert check_site.raw_roles(site) == {"api/index.html": [shown]}
    assert check_site.main([site]) == 1
    err = capsys.readouterr().err
    assert "1 raw Sphinx role(s) on 1 page(s)" in err and "api/index.html" in err


@pytest.mark.parametrize("body", [
    '<p><a class="autorefs autorefs-internal" href="../api/#m"><code>MeasureReport</code></a> and '
    '<span title="lightning_equivariance.lie"><code>lightning_equivariance.lie</code></span></p>',
    "<pre><code>:class:`X` in a code block is shown on purpose</code></pre>",
])
def test_check_site_passes_links_and_code_blocks(tmp_path, body):
    assert check_site.main([_site(tmp_path, {"index.html": body})]) == 0


def test_mkdocs_reads_the_extension_and_build_sh_runs_the_check():
    config = (DOCS.parent / "mkdocs.yml").read_text()
    assert "- docs/sphinx_roles.py:SphinxRoles" in config and "*.py" in config  # the scripts are no pages
    build = (DOCS / "build.sh").read_text()
    assert 'docs/check_site.py "$SITE_DIR"' in build
