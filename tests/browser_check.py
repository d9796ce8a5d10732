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

A page also fails when its prose shows Markdown that was not rendered: a backtick or a "**" in text
outside code, listings, scripts and math, as happens when glued plain text ({glue:text}) carries
Markdown.

A results chapter (a page built from notebooks/, other than the exempt update_rules and train)
also fails when it shows more than CODE_LIMIT non-blank lines of code: code cell inputs
(myst-nb's div.cell_input) that the page shows expanded. A cell tagged remove-input has no
cell_input; one tagged hide-input or hide-cell has its cell_input inside a closed
<details class="admonition hide above-input"> in a div.cell.tag_hide-input (tag_hide-cell);
neither counts.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import tempfile
import threading
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urldefrag, urlsplit

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1000"]
SKIP_DIRS = {"_static", "_sources", "_sphinx_design_static", "_panels_static"}
# A results chapter may show at most this many non-blank lines of code; plotting and bookkeeping
# cells go behind hide-input (or remove-input). Exempt: update_rules derives the rules in code,
# train is a worked example of a training call.
CODE_LIMIT = 40
CODE_EXEMPT = {"update_rules", "train"}

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


class _VisibleCode(HTMLParser):
    """Non-blank lines of the code cell inputs (div.cell_input) that a page shows expanded.

    An input is hidden when it sits inside a <details> without the open attribute (myst-nb's
    hide-input, hide-cell), inside an element with the hidden attribute or an inline display:none,
    or inside an element of a class in HIDDEN_CLASSES (sphinx-togglebutton's collapsed state, and
    the cell tags themselves should myst-nb hide them some other way).
    """

    HIDDEN_CLASSES = {"toggle-hidden", "tag_hide-input", "tag_hide-cell", "tag_remove-input", "tag_remove-cell"}
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[str, bool, bool]] = []   # (tag, hidden, starts a cell input)
        self.inputs: list[list[str]] = []                # text of each visible cell input

    def _state(self) -> tuple[bool, bool]:
        hidden = any(h for _, h, _ in self.stack)
        return hidden, any(i for _, _, i in self.stack)

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        attrs = dict(attrs)
        classes = set((attrs.get("class") or "").split())
        style = (attrs.get("style") or "").replace(" ", "").lower()
        hidden = (bool(classes & self.HIDDEN_CLASSES) or "hidden" in attrs or "display:none" in style
                  or (tag == "details" and "open" not in attrs))
        was_hidden, in_input = self._state()
        starts_input = "cell_input" in classes and not in_input
        if starts_input and not (hidden or was_hidden):
            self.inputs.append([])
        self.stack.append((tag, hidden, starts_input))

    def handle_endtag(self, tag):
        if not any(t == tag for t, _, _ in self.stack):
            return                                           # a stray end tag
        while self.stack and self.stack.pop()[0] != tag:
            pass                                             # closes elements left open inside

    def handle_data(self, data):
        hidden, in_input = self._state()
        if in_input and not hidden and self.inputs:
            self.inputs[-1].append(data)


def visible_code_lines(html: str) -> int:
    """Non-blank lines of code a page shows expanded (see _VisibleCode)."""
    parser = _VisibleCode()
    parser.feed(html)
    parser.close()
    return sum(1 for text in parser.inputs for line in "".join(text).splitlines() if line.strip())


class _Prose(HTMLParser):
    """The text of a page outside code, listings, scripts, styles and math."""

    SKIP = {"code", "pre", "script", "style", "title", "kbd", "samp"}

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[str, bool]] = []   # open elements: (tag, whether it starts a skipped region)
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in _VisibleCode.VOID:
            return
        classes = set((dict(attrs).get("class") or "").split())
        self.stack.append((tag, tag in self.SKIP or bool(classes & {"math", "highlight"})))

    def handle_endtag(self, tag):
        if any(t == tag for t, _ in self.stack):
            while self.stack.pop()[0] != tag:
                pass                        # closes elements left open inside

    def handle_data(self, data):
        if not any(skip for _, skip in self.stack):
            self.text.append(data)


def literal_markdown(html: str) -> list[str]:
    """Snippets of prose that show Markdown syntax literally, one per code or bold span (or lone backtick or
    "**"); see _Prose."""
    parser = _Prose()
    parser.feed(html)
    parser.close()
    text = " ".join(" ".join(parser.text).split())  # a space between elements: <td>*</td><td>*</td> is no "**"
    return [text[max(0, m.start() - 40):m.end() + 40]  # a whole `span` or **span** once, else a lone mark
            for m in re.finditer(r"`[^`]{0,200}`|\*\*.{0,200}?\*\*|`|\*\*", text)]


def is_results_chapter(rel: str) -> bool:
    """Whether a page (a path relative to the HTML root) is a results chapter built from notebooks/."""
    path = PurePosixPath(rel)
    return path.parent.as_posix() == "notebooks" and path.suffix == ".html" and path.stem not in CODE_EXEMPT


def code_problem(page: Path, root: Path) -> str | None:
    """Why a results chapter shows too much code, or None."""
    rel = page.relative_to(root).as_posix()
    if not is_results_chapter(rel):
        return None
    lines = visible_code_lines(page.read_text(encoding="utf-8", errors="replace"))
    if lines <= CODE_LIMIT:
        return None
    return (f"{rel} shows {lines} lines of code, over the limit of {CODE_LIMIT} for a results chapter "
            f"(tag plotting and bookkeeping cells hide-input or remove-input)")


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


REDIRECT = re.compile(r"<meta[^>]+http-equiv=[\"']?refresh", re.IGNORECASE)


def check_page(driver, url: str, origin: str, root: Path) -> tuple[list[str], list[str]]:
    """Problems and ignored (off-site) load failures of one page (of the page it redirects to, for
    a redirect page such as the book's index.html)."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    if REDIRECT.search((root / unquote(urlsplit(url).path).lstrip("/")).read_text(encoding="utf-8", errors="replace")):
        # inspect where it leads once it is there: a script started before the redirect would be
        # lost with the page it ran in, and wait until the script timeout
        WebDriverWait(driver, 120).until(
            lambda d: d.current_url != url and d.execute_script("return document.readyState") == "complete")
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
    driver.get("about:blank")  # the page's console messages, some delivered late under load, are all in now
    for entry in driver.get_log("browser"):
        if entry["level"] != "SEVERE":
            continue
        message = entry["message"]
        offsite = entry.get("source") == "network" and origin not in message
        (ignored if offsite else problems).append(f"console: {message}")
    return problems, ignored


def chromium(profile: Path | str):
    """Headless Chromium under selenium with a fresh profile folder, logging the browser console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


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

    server = serve(root)
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    failed = 0
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        driver = chromium(profile)
        try:
            driver.set_page_load_timeout(180)  # generous: a loaded machine renders MathJax slowly, and a
            driver.set_script_timeout(120)     # timeout would fail the check without finding anything
            driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ERROR_HOOK})
            for page in found:
                rel = page.relative_to(root).as_posix()
                problems, ignored = check_page(driver, f"{origin}/{rel}", origin, root)
                if too_much_code := code_problem(page, root):
                    problems.append(too_much_code)
                problems += [f"Markdown shown literally: ...{snippet}..." for snippet in
                             literal_markdown(page.read_text(encoding="utf-8", errors="replace"))]
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
