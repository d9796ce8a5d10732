"""Open every page of the built book in headless Chromium and fail on what a reader would see broken.

Usage: python tests/browser_check.py _build/html [--screenshots DIR]

Serves the HTML folder on a free localhost port and loads each page with Selenium driving
Debian's chromium and chromedriver. A page fails on: an <img> that did not load
(naturalWidth 0), a <figure> without a loaded image, a "**Figure N.**" caption paragraph
with no loaded image above it (a plot that did not appear), math that MathJax did not typeset or
typeset with a TeX error, an internal link to a missing file or to
an anchor that the target page does not define, a JavaScript error, or a same-origin resource
that failed to load. The book serves its own MathJax; a resource on another host cannot load
on an offline machine: such load failures are listed as ignored, never counted, and only those.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import threading
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1000"]
SKIP_DIRS = {"_static", "_sources", "_sphinx_design_static", "_panels_static"}

# Installed before any page script runs: records uncaught errors and rejected promises.
ERROR_HOOK = """
window.__pageErrors = [];
window.addEventListener('error', e => window.__pageErrors.push(
  (e.message || 'error') + ' at ' + (e.filename || '?') + ':' + (e.lineno || '?')));
window.addEventListener('unhandledrejection', e => window.__pageErrors.push(
  'unhandled rejection: ' + String(e.reason)));
"""

# Waits for every image and for MathJax, then describes images, figures, captions, links, math.
# A chapter's caption is a paragraph starting with a bold "Figure N." below its plot (the notebook
# convention): one with no loaded image between it and the previous caption is a missing figure.
INSPECT = """
const done = arguments[arguments.length - 1];
function captionsWithoutImage() {
  const missing = [];
  let images = 0;
  const walker = document.createTreeWalker(document.getElementById('main-content') || document.body,
                                           NodeFilter.SHOW_ELEMENT);
  for (let n = walker.currentNode; n; n = walker.nextNode()) {
    if ((n.tagName === 'IMG' && n.naturalWidth > 0) || (n.tagName === 'svg' && n.closest('.cell_output'))) {
      images++;
    } else if (n.tagName === 'P' && n.firstElementChild && n.firstElementChild.tagName === 'STRONG') {
      const lead = n.firstElementChild.textContent.trim();
      if (/^Figure \\d+/.test(lead) && n.textContent.trim().startsWith(lead)) {
        if (images === 0) missing.push(lead);
        images = 0;
      }
    }
  }
  return missing;
}
const imgs = Array.from(document.images);
imgs.forEach(i => { i.loading = 'eager'; });
const typeset = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
  i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 10000); })).concat([typeset]))
.then(() => done({
  images: imgs.map(i => ({src: i.currentSrc || i.src || '', width: i.naturalWidth})),
  figures: Array.from(document.querySelectorAll('figure')).map(f => ({
    id: f.id || (f.querySelector('figcaption') || f).textContent.trim().slice(0, 60),
    loaded: Array.from(f.querySelectorAll('img')).some(i => i.naturalWidth > 0)
            || f.querySelector('svg, object, video, canvas') !== null})),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  uncaptioned: captionsWithoutImage(),
  math: document.querySelectorAll('.math').length,
  typeset: document.querySelectorAll('mjx-container').length,
  mathErrors: Array.from(document.querySelectorAll('mjx-merror')).map(e => e.getAttribute('data-mjx-error') || e.textContent),
  errors: window.__pageErrors || [],
  url: location.href,
}));
"""


class _Ids(HTMLParser):
    """Collects the id and name attributes of an HTML file: the anchors a link may target."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


def pages(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.html")
                  if not SKIP_DIRS.intersection(p.relative_to(root).parts))


def serve(root: Path) -> ThreadingHTTPServer:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def link_problem(href: str, origin: str, root: Path) -> str | None:
    """Why an internal link is broken, or None (external links are not followed)."""
    if not href.startswith(origin + "/"):
        return None
    url, fragment = urldefrag(href)
    target = root / unquote(urlsplit(url).path).lstrip("/")
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return f"link to missing file {href}"
    if fragment and target.suffix == ".html" and unquote(fragment) not in anchors(target):
        return f"link to missing anchor {href}"
    return None


def check_page(driver, url: str, origin: str, root: Path) -> tuple[list[str], list[str]]:
    """Problems and ignored (off-site) load failures of one page."""
    driver.get(url)
    seen = driver.execute_async_script(INSPECT)
    problems, ignored = [], []
    if not seen["url"].startswith(origin):
        problems.append(f"navigated off-site to {seen['url']}")
    problems += [f"broken image {i['src']}" for i in seen["images"] if i["width"] == 0]
    problems += [f"figure without a loaded image: {f['id']!r}" for f in seen["figures"] if not f["loaded"]]
    problems += [f"caption {c!r} with no image above it" for c in seen["uncaptioned"]]
    problems += sorted({p for h in seen["links"] if (p := link_problem(h, origin, root))})
    if seen["math"] and not seen["typeset"]:
        problems.append(f"{seen['math']} formulas not typeset (MathJax did not run)")
    problems += [f"TeX error in a formula: {e}" for e in seen["mathErrors"]]
    problems += [f"JavaScript error: {e}" for e in seen["errors"]]
    for entry in driver.get_log("browser"):
        if entry["level"] != "SEVERE":
            continue
        message = entry["message"]
        offsite = entry.get("source") == "network" and origin not in message
        (ignored if offsite else problems).append(f"console: {message}")
    return problems, ignored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="the built book, e.g. _build/html")
    parser.add_argument("--screenshots", type=Path, help="save a PNG of each page here")
    args = parser.parse_args(argv)
    root = args.html.resolve()
    found = pages(root)
    if not found:
        print(f"browser check: no HTML pages under {root}; build the book first", file=sys.stderr)
        return 1

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    server = serve(root)
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    failed = 0
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS + [f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            driver.set_page_load_timeout(60)
            driver.set_script_timeout(30)
            driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ERROR_HOOK})
            for page in found:
                rel = page.relative_to(root).as_posix()
                problems, ignored = check_page(driver, f"{origin}/{rel}", origin, root)
                if args.screenshots:
                    shot = args.screenshots / (rel.replace("/", "__") + ".png")
                    shot.parent.mkdir(parents=True, exist_ok=True)
                    driver.save_screenshot(str(shot))
                failed += bool(problems)
                print(f"{'FAIL' if problems else 'ok  '} {rel}")
                for line in problems:
                    print(f"     {line}")
                for line in ignored:
                    print(f"     ignored (off-site, offline machine): {line}")
        finally:
            driver.quit()
            server.shutdown()
    print(f"browser check: {len(found) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
