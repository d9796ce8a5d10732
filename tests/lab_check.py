"""Open a chapter in JupyterLab in headless Chromium and fail unless its MyST Markdown renders.

Usage: python tests/lab_check.py [SCREENSHOT] [--notebook notebooks/update_rules.ipynb]

`make lab` opens the chapters in JupyterLab; without the jupyterlab-myst extension JupyterLab shows
MyST roles such as {cite}`key` as raw text. This starts `jupyter lab` on a free localhost port with
a random token and notebooks/ as its root, loads the chapter with Selenium driving Debian's
chromium and chromedriver (as tests/browser_check.py does), waits until every Markdown cell is
rendered, and fails when the rendered Markdown shows a raw role ({cite}`...`, {glue:text}`...`),
when no formula was typeset, when a formula failed to typeset, or when raw $...$ math is left.
It saves a screenshot of the opened chapter (default _build/lab.png) and always stops the server.

The server runs with throwaway settings, workspace and runtime folders: autosave off (opening a
chapter starts a kernel, which can mark it modified; nothing is written back), no news or update
checks, and windowing off so that every cell is attached and rendered, not only those in view.
Every wait is bounded: the whole check gives up after --timeout seconds (default 90).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_check import chromium  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = Path(sys.executable).parent / "jupyter"
# a role left raw: {cite}`key`, or {cite} glued to its argument once the backticks became <code>
RAW_ROLE = re.compile(r"\{[A-Za-z][\w.-]*(?::[\w.-]+)?\}(?=[`\w])")
RAW_MATH = re.compile(r"\$[^$\s][^$]*\$")
SETTINGS = {                                                  # the server's user settings, by plugin
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}

# The Markdown cells of the open notebook and what their rendered output shows. The hidden editor
# of a cell holds the raw source, so only the rendered widget is read: jupyterlab-myst's div.myst,
# or JupyterLab's own .jp-MarkdownOutput; MathML copies and TeX annotations are left out of its text.
INSPECT = """
const cells = Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-MarkdownCell'));
const outputs = cells.map(c => c.querySelector(':scope .jp-Cell-inputWrapper .myst, '
                                              + ':scope .jp-Cell-inputWrapper .jp-MarkdownOutput'))
                     .filter(o => o !== null);
const text = outputs.map(o => {
  const copy = o.cloneNode(true);
  copy.querySelectorAll('.katex-mathml, annotation, mjx-assistive-mml, script, style').forEach(e => e.remove());
  return copy.textContent;
});
const within = sel => outputs.reduce((n, o) => n + o.querySelectorAll(sel).length, 0);
return {
  cells: cells.length,
  rendered: cells.filter(c => c.classList.contains('jp-mod-rendered')).length,
  outputs: outputs.length,
  myst: outputs.filter(o => o.classList.contains('myst')).length,
  text: text,
  math: within('.katex, mjx-container'),
  mathErrors: Array.from(new Set(outputs.flatMap(o => Array.from(o.querySelectorAll('.katex-error, mjx-merror'))
                    .map(e => e.getAttribute('title') || e.getAttribute('data-mjx-error') || e.textContent)))),
  citationsNotFound: within('[title="Citation Not Found"]'),
  dialogs: Array.from(document.querySelectorAll('.jp-Dialog')).map(d => d.textContent.slice(0, 200)),
};
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def markdown_sources(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]


def start_server(notebooks: Path, tmp: Path, port: int, token: str) -> subprocess.Popen:
    for plugin, values in SETTINGS.items():
        path = tmp / "settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    command = [str(JUPYTER), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--ServerApp.port_retries=0", f"--ServerApp.root_dir={notebooks}",
               f"--LabApp.user_settings_dir={tmp / 'settings'}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    # the token goes by environment, not on the command line where any local user could read it
    env = dict(os.environ, JUPYTER_TOKEN=token, JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
    log = open(tmp / "server.log", "wb")
    # its own process group: stopping the server also stops the kernel it started
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.pid, signal.SIGKILL)              # a kernel left behind in its group
    except ProcessLookupError:
        pass
    server.wait(5)


def wait_for_server(server: subprocess.Popen, base: str, token: str, deadline: float) -> None:
    request = urllib.request.Request(f"{base}/api/status", headers={"Authorization": f"token {token}"})
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(request, timeout=2):
                return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError("jupyter lab did not answer on /api/status")


def problems_of(seen: dict, expected: int) -> list[str]:
    problems = []
    if seen["rendered"] < expected or seen["outputs"] < expected:
        problems.append(f"{seen['rendered']} of {expected} Markdown cells rendered")
    if seen["myst"] < seen["outputs"]:
        problems.append(f"{seen['outputs'] - seen['myst']} Markdown cells not rendered by jupyterlab-myst "
                        "(is it installed and enabled? jupyter labextension list)")
    raw = sorted({m for text in seen["text"] for m in RAW_ROLE.findall(text)})
    if raw:
        problems.append(f"raw MyST roles in the rendered Markdown: {', '.join(raw)}")
    if not seen["math"]:
        problems.append("no formula typeset in the rendered Markdown")
    problems += [f"formula failed to typeset: {e}" for e in seen["mathErrors"]]
    left = sorted({m for text in seen["text"] for m in RAW_MATH.findall(text)})
    if left:
        problems.append(f"raw math left in the rendered Markdown: {', '.join(left[:5])}")
    problems += [f"dialog open: {d!r}" for d in seen["dialogs"]]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("screenshot", type=Path, nargs="?", default=ROOT / "_build" / "lab.png",
                        help="where to save a PNG of the opened chapter (default _build/lab.png)")
    parser.add_argument("--notebook", type=Path, default=ROOT / "notebooks" / "update_rules.ipynb",
                        help="a chapter with a {cite} role and $...$ math in its Markdown")
    parser.add_argument("--timeout", type=float, default=90, help="give up after this many seconds")
    args = parser.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.timeout
    notebook = args.notebook.resolve()
    sources = [s for s in markdown_sources(notebook) if s.strip()]
    if not any("{cite" in s for s in sources) or not any("$" in s for s in sources):
        print(f"lab check: {notebook.name} has no {{cite}} role or no $...$ math in its Markdown; "
              "pick a chapter that has both", file=sys.stderr)
        return 1

    token, port = secrets.token_hex(24), free_port()
    base = f"http://127.0.0.1:{port}"
    # SIGTERM (a CI timeout, make interrupted) unwinds through the finally blocks like Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seen, problems, console = None, [], []
    with tempfile.TemporaryDirectory(prefix="lab-check-") as tmp:
        tmp = Path(tmp)
        server = start_server(notebook.parent, tmp, port, token)
        try:
            wait_for_server(server, base, token, min(deadline, time.monotonic() + 40))
            print(f"lab check: JupyterLab up after {time.monotonic() - started:.0f} s")
            driver = chromium(tmp / "chromium")
            try:
                driver.set_page_load_timeout(30)
                driver.set_script_timeout(10)
                driver.get(f"{base}/lab/tree/{notebook.name}?token={token}")
                while True:
                    seen = driver.execute_script(INSPECT)
                    if seen["rendered"] >= len(sources) and seen["outputs"] >= len(sources):
                        break
                    if time.monotonic() > deadline - 15:     # keep time to report and stop
                        break
                    time.sleep(0.5)
                time.sleep(1)                                # let layout settle for the picture
                seen = driver.execute_script(INSPECT)
                args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(args.screenshot))
                console = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            finally:
                driver.quit()
        except Exception as error:                           # noqa: BLE001 - reported, then fails
            problems.append(f"{type(error).__name__}: {error}")
        finally:
            stop_server(server)
        if problems:
            print((tmp / "server.log").read_text(errors="replace")[-3000:], file=sys.stderr)

    if seen is not None:
        problems = problems_of(seen, len(sources)) + problems
        print(f"lab check: {notebook.name}: {seen['rendered']} of {len(sources)} Markdown cells rendered, "
              f"{seen['myst']} by jupyterlab-myst, {seen['math']} formulas typeset")
        if seen["citationsNotFound"]:
            print(f"     note: {seen['citationsNotFound']} citations show their key marked 'Citation Not Found' "
                  "(JupyterLab has no bibliography)")
        glue = sum(s.count("{glue") for s in sources)
        if glue:
            print(f"     note: {glue} {{glue}} roles show their key as plain text (JupyterLab does not resolve glue)")
        for message in console[:5]:
            print(f"     console (not counted): {message[:300]}")
    print(f"lab check: screenshot {args.screenshot}")
    for line in problems:
        print(f"FAIL {line}")
    print(f"lab check: {'failed' if problems else 'passed'} in {time.monotonic() - started:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
