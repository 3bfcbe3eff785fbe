"""Serve the book's MathJax and ipywidgets scripts from the book itself, not from CDNs.

By default Sphinx loads MathJax from jsdelivr and myst-nb loads RequireJS from cdnjs and
the widget manager (``@jupyter-widgets/html-manager``) from jsdelivr, so a book opened
without network shows raw ``$...$`` and empty widget outputs. This module does two things:

* ``python book/_ext/vendor_js.py`` (run by ``make book`` and the browser test) installs
  the npm packages ``mathjax``, ``@jupyter-widgets/html-manager`` and ``requirejs`` into
  ``_build/vendor-js/npm``, copies the files a page needs (15 MB) into
  ``_build/vendor-js/static/vendor/`` and removes the rest. Without npm, or when the install fails, it says so
  and exits 0: the book then falls back to the CDNs.
* As a Sphinx extension (``sphinx: local_extensions: {vendor_js: book/_ext}`` in
  ``_config.yml``) it checks at ``config-inited`` whether those files exist and, if so,
  points ``mathjax_path`` and myst-nb's ``nb_ipywidgets_js`` at them and adds the folder
  to ``html_static_path``, so they are copied to ``_build/html/_static/vendor/``.
  When they are missing, MathJax and the widget scripts come from the CDN defaults.
  Either way it adds ``static/widget-glue.js`` to pages with widgets (see
  ``with_widget_glue``).

The vendored files live under ``_build/`` (ignored by git and excluded from the book's
sources), not in a top-level ``_static/``: Jupyter Book 1 would add every ``.js`` file
found there to every page.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENDOR_DIR = ROOT / "_build" / "vendor-js"
STATIC_DIR = VENDOR_DIR / "static"          # goes into html_static_path
TARGET = STATIC_DIR / "vendor"              # -> _build/html/_static/vendor/

# Versions pinned for a reproducible book. html-manager 1.0.x renders ipywidgets 8 state
# (widget model version 2.0.0); myst-nb's CDN default is html-manager 1.0.6.
PACKAGES = {
    "mathjax": "3.2.2",
    "@jupyter-widgets/html-manager": "1.0.15",
    "requirejs": "2.3.8",
}

# Paths relative to _static/, as Sphinx's add_js_file expects them.
MATHJAX_JS = "vendor/mathjax/tex-mml-chtml.js"   # Sphinx's default component, served locally
REQUIRE_JS = "vendor/requirejs/require.js"
EMBED_JS = "vendor/html-manager/embed-amd.js"
GLUE_JS = "widget-glue.js"                       # from book/_ext/static/
GLUE_DIR = Path(__file__).resolve().parent / "static"

# The parts of mathjax/es5 that tex-mml-chtml.js loads: fonts and, on demand, TeX
# extensions, the accessibility menu and speech. The SVG output and the other combined
# components are left out (about 16 MB).
MATHJAX_PARTS = ["tex-mml-chtml.js", "input", "output/chtml", "output/chtml.js",
                 "a11y", "ui", "sre", "adaptors"]


def vendored(target: Path = TARGET) -> bool:
    """Whether the local scripts are in place with the pinned versions."""
    manifest = target / "versions.json"
    try:
        recorded = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    files = [target.parent / p for p in (MATHJAX_JS, REQUIRE_JS, EMBED_JS)]
    return recorded == PACKAGES and all(f.is_file() for f in files)


def _copy_files(modules: Path, target: Path) -> None:
    """Copy what the pages load from ``node_modules`` into ``target``."""
    if target.exists():
        shutil.rmtree(target)
    mathjax = modules / "mathjax" / "es5"
    for part in MATHJAX_PARTS:
        src, dst = mathjax / part, target / "mathjax" / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    shutil.copy2(modules / "mathjax" / "LICENSE", target / "mathjax" / "LICENSE")

    (target / "requirejs").mkdir(parents=True)
    shutil.copy2(modules / "requirejs" / "require.js", target / "requirejs" / "require.js")

    # embed-amd.js plus the icon fonts it references next to itself; no source maps
    dist = modules / "@jupyter-widgets" / "html-manager" / "dist"
    (target / "html-manager").mkdir(parents=True)
    for f in dist.iterdir():
        if f.name == "embed-amd.js" or f.suffix in {".woff", ".woff2", ".ttf", ".eot", ".svg"}:
            shutil.copy2(f, target / "html-manager" / f.name)
    (target / "versions.json").write_text(json.dumps(PACKAGES, indent=2) + "\n")


def fetch(vendor_dir: Path = VENDOR_DIR, quiet: bool = False) -> bool:
    """Install the pinned npm packages and copy the page scripts; False when not possible.

    Idempotent: nothing is downloaded when the pinned versions are already in place.
    """
    target = vendor_dir / "static" / "vendor"
    if vendored(target):
        return True
    npm = shutil.which("npm")
    if npm is None:
        print("vendor_js: npm not found; the book loads MathJax and widgets from CDNs",
              file=sys.stderr)
        return False
    prefix = vendor_dir / "npm"
    prefix.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}@{version}" for name, version in PACKAGES.items()]
    cmd = [npm, "install", "--prefix", str(prefix), "--no-save", "--no-audit", "--no-fund",
           "--ignore-scripts", "--loglevel=error", *specs]
    if not quiet:
        print("vendor_js:", " ".join(cmd[1:]), file=sys.stderr)
    try:
        subprocess.run(cmd, check=True, timeout=600,
                       stdout=subprocess.DEVNULL if quiet else None)
        _copy_files(prefix / "node_modules", target)
        shutil.rmtree(prefix)  # 150 MB of node_modules; the copied files are all we need
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"vendor_js: could not vendor the scripts ({exc}); "
              "the book loads MathJax and widgets from CDNs", file=sys.stderr)
        return False
    return vendored(target)


def with_widget_glue(scripts: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """``nb_ipywidgets_js`` with ``widget-glue.js`` inserted just before ``embed-amd.js``.

    The glue tells RequireJS where the widget manager's own files (icon fonts) are and lets
    ipywidgets' MathJax 2 call (``MathJax.Hub.Queue``) reach MathJax 3. It is added for the
    local scripts and for the CDN ones alike.
    """
    out: dict[str, dict[str, str]] = {}
    for url, attrs in scripts.items():
        folder, _, name = url.rpartition("/")
        if name == "embed-amd.js" and GLUE_JS not in out:
            out[GLUE_JS] = {"data-html-manager-dist": folder + "/"}
        out[url] = attrs
    return out


def use_local_scripts(app, config) -> None:
    """``config-inited``: point MathJax and the widget scripts at the vendored copies."""
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    config.html_static_path = [*config.html_static_path, str(GLUE_DIR)]
    if vendored():
        config.mathjax_path = MATHJAX_JS
        # myst-nb adds these, in order, to the pages that hold widget state
        config.nb_ipywidgets_js = {REQUIRE_JS: {}, EMBED_JS: {}}
        config.html_static_path = [*config.html_static_path, str(STATIC_DIR)]
        logger.info("vendor_js: MathJax and widget scripts served from _static/vendor/")
    else:
        logger.info("vendor_js: no local scripts in %s; MathJax and widgets load from CDNs",
                    TARGET)
    config.nb_ipywidgets_js = with_widget_glue(config.nb_ipywidgets_js)


def setup(app):
    # before myst-nb and sphinx.ext.mathjax read these values
    app.connect("config-inited", use_local_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    ok = fetch()
    print(f"vendor_js: {'local scripts in ' + str(TARGET) if ok else 'CDN fallback'}")
