#!/usr/bin/env bash
# Build the documentation site with `mkdocs build --strict` (every warning is an error:
# broken links and anchors, pages outside the nav, griffe's docstring warnings), then
# fail when a page still shows a raw Sphinx role such as :class:`X` (docs/check_site.py).
#
#   docs/build.sh [SITE_DIR]
#
# SITE_DIR defaults to a new temporary directory (nothing is written into the checkout).
# The docs tools live in their own small venv, $DOCS_VENV (default: a folder under
# ${TMPDIR:-/tmp}), created on first use and reused while the `docs` extra of
# pyproject.toml is unchanged. Only the `docs` extra's packages are installed - not the
# project, not torch: mkdocstrings reads the source statically (griffe).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
DOCS_VENV="${DOCS_VENV:-${TMPDIR:-/tmp}/lightning-equivariance-docs-venv}"
SITE_DIR="${1:-$(mktemp -d "${TMPDIR:-/tmp}/lightning-equivariance-site.XXXXXX")}"

# The `docs` extra of pyproject.toml, one requirement a line.
REQUIREMENTS="$("$PYTHON" - <<'PY'
import re, sys
text = open("pyproject.toml", encoding="utf-8").read()
try:
    import tomllib
    reqs = tomllib.loads(text)["project"]["optional-dependencies"]["docs"]
except ModuleNotFoundError:  # Python < 3.11: the extra is one line, docs = [...]
    match = re.search(r'^docs\s*=\s*\[(.*?)\]', text, re.M | re.S)
    if not match:
        sys.exit("pyproject.toml has no docs extra")
    reqs = re.findall(r'"([^"]+)"', match.group(1))
print("\n".join(reqs))
PY
)"

STAMP="$DOCS_VENV/.docs-requirements"
if [ ! -x "$DOCS_VENV/bin/mkdocs" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$REQUIREMENTS" ]; then
  echo "docs: installing into $DOCS_VENV:" $REQUIREMENTS
  "$PYTHON" -m venv "$DOCS_VENV"
  mapfile -t REQS <<<"$REQUIREMENTS"
  "$DOCS_VENV/bin/pip" install -q --disable-pip-version-check "${REQS[@]}"
  printf '%s' "$REQUIREMENTS" >"$STAMP"
fi

export NO_MKDOCS_2_WARNING=1  # mkdocs-material's notice about its successor, not a build warning
"$DOCS_VENV/bin/mkdocs" build --strict --config-file mkdocs.yml --site-dir "$SITE_DIR"
# No page may show a raw Sphinx role (:class:`X`): docs/sphinx_roles.py makes them links.
"$PYTHON" docs/check_site.py "$SITE_DIR"
echo "docs: built $SITE_DIR/index.html"
