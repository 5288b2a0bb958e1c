"""The built book in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by scripts/setup_browser.sh) opens every page over a local
HTTP server with no network beyond it, and checks that

* no internal link is broken (the target file exists, and so does the #fragment's id);
* every image has loaded (complete, with a non-zero natural width);
* the browser console logged no error (e.g. a script or font that failed to load);
* equations are typeset by the locally served MathJax (``mjx-container`` elements, no
  MathJax error) on every page that has math;
* nothing in the text column scrolls sideways (no code block, printed output or table wider
  than the column) at a laptop's 1280 pixels and at 1024 (where the sidebar folds away),
  and no table cell is cut (book/_ext/static/reading.css makes them fit).

A screenshot of the front page is saved to ``_build/screenshots/front-page.png`` and its
path printed for the CI log.
"""

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "_build" / "screenshots" / "front-page.png"


def _chromium():
    webdriver = pytest.importorskip("selenium.webdriver")
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are missing: run scripts/setup_browser.sh")
        pytest.skip("chromium is not installed (bash scripts/setup_browser.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


@pytest.fixture(scope="module")
def served_book(built_book):
    returncode, log, html = built_book
    assert returncode == 0, log
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _pages(html: Path) -> list[Path]:
    skip = {"genindex.html", "search.html"}
    return sorted(p for p in html.rglob("*.html")
                  if p.name not in skip and not p.relative_to(html).parts[0].startswith("_"))


_WAIT_FOR_MATH = """
const done = arguments[arguments.length - 1];
if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
  MathJax.startup.promise.then(() => done(true), () => done(false));
} else { done(null); }
"""

_INSPECT = """
const origin = location.origin;
return {
  broken_images: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
  n_images: document.images.length,
  links: [...document.querySelectorAll('a[href]')].map(a => a.href).filter(h => h.startsWith(origin)),
  n_math_sources: document.querySelectorAll('.math, div.math, span.math').length,
  n_typeset: document.querySelectorAll('mjx-container').length,
  n_math_errors: document.querySelectorAll('mjx-merror, .MathJax_Error').length,
  mathjax_src: [...document.scripts].map(s => s.src).filter(s => s.includes('mathjax')),
  column_px: (() => {
    const a = document.querySelector('article.bd-article');
    if (!a) return null;
    const style = getComputedStyle(a);
    return a.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  })(),
  cut_cells: [...document.querySelectorAll('article.bd-article table td, article.bd-article table th')]
    .filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.textContent.trim().slice(0, 40)),
  sideways: SIDEWAYS(),
};
"""

#: the code blocks, printed outputs and tables of the text column that scroll sideways:
#: [what, pixels hidden, its longest line]
_SIDEWAYS = """
const SIDEWAYS = () => [...document.querySelectorAll('article.bd-article pre, article.bd-article table')]
  .filter(e => e.scrollWidth > e.clientWidth + 1)
  .map(e => [e.tagName === 'TABLE' ? 'table' : e.closest('.cell_output') ? 'printed output' : 'code',
             e.scrollWidth - e.clientWidth,
             e.textContent.split('\\n').reduce((m, l) => l.length > m.length ? l : m, '').trim().slice(0, 60)]);
"""
_INSPECT = _SIDEWAYS + _INSPECT


def _sideways(rel: str, width: int, found: list) -> list[str]:
    return [f"{rel}: a {what} scrolls sideways by {px} px at {width} px: {line!r}"
            for what, px, line in found]


def _ids(path: Path) -> set[str]:
    return set(re.findall(r'\sid="([^"]+)"', path.read_text(errors="replace")))


@pytest.mark.slow
def test_every_page_of_the_built_book_works_in_chromium(served_book, capsys):
    html, base = served_book
    driver = _chromium()
    problems, ids_cache = [], {}
    n_pages = n_images = n_typeset = n_math_pages = n_links = 0
    column_px = {}  # the text column's width on each chapter page, in CSS pixels
    try:
        driver.set_script_timeout(300)  # typesetting on a busy 2-core machine can take minutes; speed is not tested here
        for page in _pages(html):
            rel = page.relative_to(html).as_posix()
            driver.get(base + rel)
            math_ok = driver.execute_async_script(_WAIT_FOR_MATH)
            seen = driver.execute_script(_INSPECT)
            n_pages += 1
            n_images += seen["n_images"]
            problems += [f"{rel}: image did not load: {src}" for src in seen["broken_images"]]
            problems += [f"{rel}: a table cell is cut at this width: {text!r}"
                         for text in seen["cut_cells"]]
            problems += _sideways(rel, 1280, seen["sideways"])
            if rel.startswith("notebooks/") and seen["column_px"]:
                column_px[rel] = seen["column_px"]
            for entry in driver.get_log("browser"):
                if entry["level"] == "SEVERE":
                    problems.append(f"{rel}: console error: {entry['message']}")
            if seen["n_math_sources"]:
                n_math_pages += 1
                n_typeset += seen["n_typeset"]
                if math_ok is not True or seen["n_typeset"] == 0 or seen["n_math_errors"]:
                    problems.append(f"{rel}: equations not rendered ({seen})")
                if any(not s.startswith(base) for s in seen["mathjax_src"]):
                    problems.append(f"{rel}: MathJax not served locally: {seen['mathjax_src']}")
            for link in seen["links"]:
                n_links += 1
                url = urlparse(link)
                target = html / unquote(url.path).lstrip("/")
                if target.is_dir():
                    target = target / "index.html"
                if not target.is_file():
                    problems.append(f"{rel}: broken link {link}")
                elif url.fragment and target.suffix == ".html":
                    ids = ids_cache.setdefault(target, _ids(target))
                    if unquote(url.fragment) not in ids:
                        problems.append(f"{rel}: link to a missing anchor {link}")
        driver.set_window_size(1024, 900)  # the sidebar folds away; the column is wider
        for page in _pages(html):
            rel = page.relative_to(html).as_posix()
            driver.get(base + rel)
            problems += _sideways(rel, 1024, driver.execute_script(_SIDEWAYS + "return SIDEWAYS();"))
        driver.set_window_size(1280, 900)
        driver.get(base + "index.html")
        driver.execute_async_script(_WAIT_FOR_MATH)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
    finally:
        driver.quit()
    with capsys.disabled():  # into the CI log, not captured
        print(f"\nbrowser test: {n_pages} pages, {n_links} internal links, {n_images} images, "
              f"{n_typeset} typeset equations on {n_math_pages} pages; front page: {SCREENSHOT}")
    assert n_pages >= 10 and n_images > 20 and n_math_pages >= 5, (n_pages, n_images, n_math_pages)
    # the figures' text-size check (scoreda.plotting.text_sizes_at_column) assumes the
    # column that a 1280-pixel window shows; it must be the book's
    from scoreda import plotting

    widths = sorted(column_px.values())
    assert widths, "no chapter page reported its column width"
    with capsys.disabled():
        print(f"text column of the chapter pages at 1280 px: {widths[0]:.0f}-{widths[-1]:.0f} px "
              f"(plotting.COLUMN_PX = {plotting.COLUMN_PX})")
    assert abs(widths[len(widths) // 2] / plotting.COLUMN_PX - 1) < 0.05, widths
    assert not problems, "\n".join(problems[:40])
