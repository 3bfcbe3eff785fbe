"""The built book in headless Chromium: no JavaScript errors, figures load, math and widgets render.

The book is built under the ``smoke`` profile exactly as ``make book PROFILE=smoke`` builds it
(MathJax and the widget scripts vendored first, see ``book/_ext/vendor_js.py``) and every page
in ``_toc.yml`` is opened over a local HTTP server (``file://`` breaks RequireJS).
Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; without them
the tests skip, unless ``NNINVERT_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes them fail.
Screenshots of three chapters go to ``_build/screenshots/``.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK_OUT = ROOT / "_build" / "profile-smoke"        # where `make book PROFILE=smoke` builds
SCREENSHOTS = ROOT / "_build" / "screenshots"
SCREENSHOT_CHAPTERS = ("01_", "06_", "07_")
WINDOW = (1280, 2000)

# the book's own Sphinx extension knows where the local scripts live
_spec = importlib.util.spec_from_file_location("vendor_js", ROOT / "book" / "_ext" / "vendor_js.py")
vendor_js = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vendor_js)

pytestmark = pytest.mark.slow  # every test here builds a book

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
CDN_HOSTS = ("cdn.jsdelivr.net", "unpkg.com", "cdnjs.cloudflare.com")

# Console messages that come from the theme's own code, not from our content, each harmless:
KNOWN_THEME_MESSAGES = (
    # sphinx-thebe's inline `const THEBE_JS_URL = ...` is emitted twice under Sphinx 7.4
    # (added after builder init, re-added from the registry with filename '' vs None); the
    # second copy cannot redeclare the constant, the first one is in effect.
    "Identifier 'THEBE_JS_URL' has already been declared",
    # pydata-sphinx-theme logs this with console.error when no light/dark mode is stored yet.
    "Got invalid theme mode",
)


def _toc_pages(toc_file: Path = ROOT / "_toc.yml") -> list[str]:
    """Every page of the book in table-of-contents order, as paths without suffix."""
    toc = yaml.safe_load(toc_file.read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))
            for part in entry.get("parts", []):
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return [str(Path(p).with_suffix("")) for p in pages]


PAGES = _toc_pages()


# ---------------------------------------------------------------- browser and server


def _browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    missing = []
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        missing.append("chromium (apt-get install chromium)")
    if not shutil.which("chromedriver"):
        missing.append("chromedriver (apt-get install chromium-driver)")
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium (pip install -e '.[test]')")
    return "missing " + ", ".join(missing) if missing else None


@pytest.fixture(scope="session")
def chrome(tmp_path_factory):
    """Headless Chromium driven by the system chromedriver, with a fresh profile."""
    reason = _browser_missing()
    if reason:
        if os.environ.get("NNINVERT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required (NNINVERT_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(f"browser test: {reason}")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")),
                              options=options)
    # the viewport itself 1280×2000 (--window-size counts the window's frame)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False})
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """An HTTP server for ``directory`` on 127.0.0.1 and a free port; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- building


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> float:
    """Run a build command; fail the test with its output tail when it fails. Returns seconds."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                    f"{proc.stdout[-6000:]}")
    return time.perf_counter() - start


def build_book(source: Path, out: Path | None = None, profile: str = "smoke",
               timeout: float = 3600) -> Path:
    """``jupyter-book build`` as the Makefile's book target runs it; returns the HTML folder."""
    env = {**os.environ, "NNINVERT_PROFILE": profile}
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(source),
           "-W", "--keep-going"]
    if out is not None:
        cmd[3:3] = ["--path-output", str(out)]
    seconds = _run(cmd, source, env, timeout)
    print(f"\nbuilt {source} ({profile}) in {seconds:.0f} s")
    return (out or source) / "_build" / "html"


@pytest.fixture(scope="session")
def book(chrome) -> Path:
    """The book built under ``smoke`` with local scripts when npm can fetch them."""
    _run([sys.executable, str(ROOT / "book" / "_ext" / "vendor_js.py")], ROOT,
         dict(os.environ), timeout=900)
    return build_book(ROOT, BOOK_OUT)


# ---------------------------------------------------------------- looking at a page


@dataclass
class Page:
    url: str
    errors: list[str] = field(default_factory=list)     # SEVERE console entries of ours
    broken_images: list[str] = field(default_factory=list)
    n_images: int = 0
    n_math: int = 0              # Sphinx math nodes in the HTML
    n_rendered: int = 0          # mjx-container elements MathJax made
    mathjax: str = ""            # "ok" once MathJax 3 has started, else why not
    raw_tex: list[str] = field(default_factory=list)  # math MathJax did not touch
    tex_errors: list[str] = field(default_factory=list)
    n_widget_views: int = 0
    n_widgets_rendered: int = 0
    scripts: list[str] = field(default_factory=list)


_WAIT_FOR_MATHJAX = """
const done = arguments[arguments.length - 1];
const mj = window.MathJax;
if (!mj || !mj.startup || !mj.startup.promise) { done("no MathJax 3"); return; }
mj.startup.promise.then(() => done("ok"), (e) => done("MathJax failed: " + e));
"""

_INSPECT = """
const views = [...document.querySelectorAll(
    'script[type="application/vnd.jupyter.widget-view+json"]')];
return {
  images: [...document.images].map(i => [i.currentSrc || i.src, i.complete, i.naturalWidth]),
  n_math: document.querySelectorAll("span.math, div.math").length,
  n_rendered: document.querySelectorAll("mjx-container").length,
  raw_tex: [...document.querySelectorAll("span.math, div.math")]
      .filter(e => !e.querySelector("mjx-container")).map(e => e.textContent.slice(0, 80)),
  dollars: (document.body.innerText.match(/\\$\\$[^$]{0,60}/g) || []),
  tex_errors: [...document.querySelectorAll("mjx-merror")].map(e =>
      e.getAttribute("data-mjx-error") || e.textContent.slice(0, 80)),
  n_views: views.length,
  n_widgets: views.filter(s => {
      const area = s.previousElementSibling;
      return area && area.classList.contains("widget-subarea")
          && area.querySelector(".jupyter-widgets");
  }).length,
  scripts: [...document.scripts].map(s => s.src).filter(Boolean),
};
"""


def _ours(message: str, origin: str) -> bool:
    """A console message about our own files (the browser's favicon probe aside)."""
    return message.startswith(origin) and not message.split()[0].endswith("/favicon.ico")


def look_at(driver, url: str, widget_timeout: float = 30) -> Page:
    """Load ``url``, let MathJax and the widget manager finish, and report what rendered."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop what earlier pages left behind
    driver.get(url)
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return document.readyState") == "complete")
    state = driver.execute_async_script(_WAIT_FOR_MATHJAX)
    n_views = driver.execute_script(_INSPECT)["n_views"]
    if n_views:  # the widget manager renders on "load", asynchronously
        with contextlib.suppress(TimeoutException):  # counted below
            WebDriverWait(driver, widget_timeout).until(
                lambda d: d.execute_script(_INSPECT)["n_widgets"] == n_views)
    time.sleep(0.3)  # late console messages
    seen = driver.execute_script(_INSPECT)
    origin = "/".join(url.split("/")[:3])  # http://127.0.0.1:port
    page = Page(url=url)
    for entry in driver.get_log("browser"):
        message = entry["message"]
        if entry["level"] != "SEVERE" or any(k in message for k in KNOWN_THEME_MESSAGES):
            continue
        # uncaught exceptions count wherever the script came from; failing to reach a CDN
        # (offline) does not
        if _ours(message, origin) or entry.get("source") == "javascript":
            page.errors.append(message)
    page.mathjax = state
    page.n_images = len(seen["images"])
    page.broken_images = [src for src, complete, width in seen["images"]
                          if not complete or width == 0]
    page.n_math, page.n_rendered = seen["n_math"], seen["n_rendered"]
    page.raw_tex = seen["raw_tex"] + seen["dollars"]
    page.tex_errors = seen["tex_errors"]
    page.n_widget_views, page.n_widgets_rendered = seen["n_views"], seen["n_widgets"]
    page.scripts = seen["scripts"]
    return page


def cdn_scripts(page: Page) -> list[str]:
    """Scripts for MathJax or widgets that the page loads from a CDN."""
    return [s for s in page.scripts if any(h in s for h in CDN_HOSTS)
            and any(k in s.lower() for k in ("mathjax", "require", "html-manager", "embed"))]


@pytest.fixture(scope="session")
def site(book, chrome):
    """The built book over HTTP, with each page looked at once: page -> Page."""
    pages: dict[str, Page] = {}
    with serve(book) as base:
        def visit(name: str) -> Page:
            if name not in pages:
                pages[name] = look_at(chrome, f"{base}/{name}.html")
            return pages[name]
        visit.base = base
        yield visit


def _need_local_or_cdn(page: Page, what: str) -> None:
    """Without vendored scripts the page needs a CDN; skip when that CDN is unreachable."""
    if vendor_js.vendored():
        assert not cdn_scripts(page), f"{what} comes from a CDN although vendored: " \
                                      f"{cdn_scripts(page)}"
        return
    import socket
    try:
        socket.create_connection(("cdn.jsdelivr.net", 443), timeout=3).close()
    except OSError:
        pytest.skip(f"{what}: no local copy (npm missing) and the CDN is unreachable")


# ---------------------------------------------------------------- the book's pages


@pytest.mark.parametrize("name", PAGES)
def test_page_has_no_javascript_errors(site, name):
    page = site(name)
    assert not page.errors, f"{name}: " + "\n".join(page.errors)


@pytest.mark.parametrize("name", PAGES)
def test_every_figure_loads(site, name):
    page = site(name)
    assert not page.broken_images, f"{name}: images with naturalWidth 0: {page.broken_images}"


@pytest.mark.parametrize("name", PAGES)
def test_math_renders(site, name):
    page = site(name)
    if page.n_math == 0:
        assert not page.raw_tex, f"{name}: unrendered TeX {page.raw_tex}"
        return
    _need_local_or_cdn(page, "MathJax")
    assert page.mathjax == "ok", f"{name}: {page.mathjax}"
    assert page.n_rendered >= page.n_math, \
        f"{name}: {page.n_rendered} of {page.n_math} formulas rendered"
    assert not page.raw_tex, f"{name}: unrendered TeX {page.raw_tex}"
    assert not page.tex_errors, f"{name}: TeX errors {page.tex_errors}"


@pytest.mark.parametrize("name", PAGES)
def test_saved_widget_state_renders(site, name):
    page = site(name)
    if page.n_widget_views == 0:
        pytest.skip(f"{name} holds no widgets")
    _need_local_or_cdn(page, "the widget manager")
    assert page.n_widgets_rendered == page.n_widget_views, \
        f"{name}: {page.n_widgets_rendered} of {page.n_widget_views} widgets rendered"


def test_vendored_scripts_are_in_the_built_book(book):
    if not vendor_js.vendored():
        pytest.skip("npm could not vendor the scripts: the book uses the CDNs")
    for rel in (vendor_js.MATHJAX_JS, vendor_js.REQUIRE_JS, vendor_js.EMBED_JS):
        assert (book / "_static" / rel).is_file(), rel
    chapter = (book / "notebooks").glob("*.html")
    html = "".join(p.read_text() for p in chapter)
    assert f'src="../_static/{vendor_js.MATHJAX_JS}' in html
    assert "cdn.jsdelivr.net/npm/mathjax" not in html


_SCROLL_TO_FIRST_VISIBLE_WIDGET = """
const area = [...document.querySelectorAll(".widget-subarea")].find(a =>
    a.firstElementChild && getComputedStyle(a.firstElementChild).visibility !== "hidden"
    && a.getBoundingClientRect().height > 0);
if (!area) return false;
area.scrollIntoView({block: "start"});
window.scrollBy(0, -80);
return true;
"""


def test_screenshots_of_three_chapters(site, chrome):
    chosen = [p for p in PAGES if Path(p).name.startswith(SCREENSHOT_CHAPTERS)]
    assert chosen, "no chapters to photograph"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name in chosen:
        look_at(chrome, f"{site.base}/{name}.html")
        shots = [SCREENSHOTS / f"{Path(name).name}.png"]
        assert chrome.save_screenshot(str(shots[0]))
        if chrome.execute_script(_SCROLL_TO_FIRST_VISIBLE_WIDGET):  # and one of the widgets
            shots.append(SCREENSHOTS / f"{Path(name).name}-widgets.png")
            assert chrome.save_screenshot(str(shots[1]))
        for path in shots:
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
            print(f"screenshot: {path}")


# ---------------------------------------------------------------- widgets, proved on a tiny book


def _widget_book(root: Path) -> Path:
    """A one-notebook Jupyter Book that displays an IntSlider, using the book's extensions."""
    import nbformat

    root.mkdir(parents=True, exist_ok=True)
    (root / "_config.yml").write_text(yaml.safe_dump({
        "title": "widget check",
        "only_build_toc_files": True,
        "execute": {"execute_notebooks": "cache", "timeout": 300},
        "sphinx": {"local_extensions": {"vendor_js": str(ROOT / "book" / "_ext"),
                                        "kernel_polls": str(ROOT / "book" / "_ext")}},
    }))
    (root / "_toc.yml").write_text("format: jb-book\nroot: slider\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A slider\n\nSaved widget state, and math: $k^2$."),
        nbformat.v4.new_code_cell("import ipywidgets\n"
                                  "ipywidgets.IntSlider(value=7, min=0, max=9, description='k')"),
    ]
    nbformat.write(nb, root / "slider.ipynb")
    return root


def test_saved_widget_state_renders_an_int_slider(chrome, tmp_path):
    html = build_book(_widget_book(tmp_path / "widget-book"), timeout=600)
    text = (html / "slider.html").read_text()
    assert "application/vnd.jupyter.widget-state+json" in text, "widget state was not saved"
    state = json.loads(text.split('type="application/vnd.jupyter.widget-state+json">')[1]
                       .split("</script>")[0])
    assert any(m["model_name"] == "IntSliderModel" for m in state["state"].values())
    with serve(html) as base:
        page = look_at(chrome, f"{base}/slider.html")
        readout = chrome.execute_script(
            "const r = document.querySelector('.widget-slider .widget-readout');"
            "return r && (r.value || r.textContent).trim();")
    assert not page.errors, "\n".join(page.errors)
    _need_local_or_cdn(page, "the widget manager")
    assert page.n_widget_views == 1 and page.n_widgets_rendered == 1
    assert readout == "7"
    assert page.n_rendered >= 1 and not page.raw_tex
