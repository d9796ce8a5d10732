"""The book's configuration and tests/browser_check.py's link checking and code limit (the browser run is `make test`)."""

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import browser_check  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def toc_files(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("root", "file"):
                yield value
            else:
                yield from toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from toc_files(item)


def test_every_toc_entry_exists():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = list(toc_files(toc))
    assert files[0] == "book/intro"
    missing = [f for f in files if not any((ROOT / f).with_suffix(s).is_file() for s in (".md", ".ipynb"))]
    assert missing == []


def test_no_prose_line_starts_with_a_percent_sign():
    """In MyST a line starting with % is a comment: its words would vanish from the page."""
    import json
    import re

    found = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                found += [f"{nb.name}: {line.strip()}" for line in "".join(cell["source"]).splitlines()
                          if re.match(r"\s*%", line)]
    assert found == []


def test_config_fails_on_errors_and_has_no_launch_buttons():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "cache"
    assert config["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    assert config["only_build_toc_files"] is True
    launch = config["launch_buttons"]
    assert not any(launch[k] for k in ("binderhub_url", "jupyterhub_url", "colab_url", "deepnote_url", "thebe"))


@pytest.fixture
def site(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "a.html").write_text('<h1 id="top">A</h1><a name="old">x</a><p id="sec-1">s</p>')
    (tmp_path / "index.html").write_text("<p>home</p>")
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "x.html").write_text("<p>theme asset</p>")
    return tmp_path


def test_pages_skip_theme_assets(site):
    assert [p.relative_to(site).as_posix() for p in browser_check.pages(site)] == ["book/a.html", "index.html"]


@pytest.mark.parametrize("href, problem", [
    ("http://h:1/book/a.html", None),
    ("http://h:1/book/a.html#sec-1", None),
    ("http://h:1/book/a.html#old", None),
    ("http://h:1/", None),
    ("https://example.org/missing.html", None),            # external: not followed
    ("http://h:1/book/b.html", "link to missing file http://h:1/book/b.html"),
    ("http://h:1/book/a.html#sec-2", "link to missing anchor http://h:1/book/a.html#sec-2"),
])
def test_link_problem(site, href, problem):
    assert browser_check.link_problem(href, "http://h:1", site) == problem


# Code cells as myst-nb 1.4 renders them (checked on a built page): a plain cell, then hide-input,
# remove-input (no cell_input at all), hide-cell and hide-output.
def code_cell(source, tag=None):
    pre = '<div class="highlight"><pre><span></span>{}\n</pre></div>'
    cell_input = (f'<div class="cell_input docutils container">\n'
                  f'<div class="highlight-ipython3 notranslate">{pre.format(source)}</div>\n</div>')
    output = (f'<div class="cell_output docutils container">'
              f'<div class="output text_plain highlight-myst-ansi notranslate">{pre.format("0.5")}</div></div>')
    details = ('<details class="admonition hide {}">\n<summary aria-label="Toggle hidden content">\n'
               '<p class="collapsed admonition-title">Show code cell source</p>\n'
               '<p class="expanded admonition-title">Hide code cell source</p>\n</summary>\n{}\n</details>')
    body = {None: cell_input + output,
            "hide-input": details.format("above-input", cell_input) + output,
            "remove-input": output,
            "hide-cell": details.format("above-input", cell_input + output),
            "hide-output": cell_input + details.format("below-input", output)}[tag]
    classes = "cell docutils container" if tag is None else f"cell tag_{tag} docutils container"
    return f'<div class="{classes}">\n{body}\n</div>\n'


def chapter(*cells):
    return ('<html><body><article class="bd-article"><section id="c"><h1>C</h1>'
            '<p>Text with <code class="docutils literal">inline = code</code>.</p>'
            '<div class="highlight-python notranslate"><div class="highlight"><pre>a listing\nin Markdown\n</pre>'
            '</div></div>'
            + "".join(cells) + "</section></article></body></html>")


def lines(n):
    """n non-blank lines of code, with a blank line after every third."""
    return "\n".join(f"x{i} = {i}  # &lt;code&gt;" + ("\n" if i % 3 == 0 else "") for i in range(n))


def test_visible_code_lines_counts_only_expanded_cell_inputs():
    page = chapter(code_cell(lines(5)), code_cell(lines(7), "hide-input"), code_cell(lines(11), "remove-input"),
                   code_cell(lines(13), "hide-cell"), code_cell(lines(2), "hide-output"),
                   '<div class="cell docutils container"><div class="cell_input toggle-hidden">y = 1</div></div>')
    assert browser_check.visible_code_lines(page) == 5 + 2      # blank lines and Markdown code not counted


@pytest.mark.parametrize("name, cells, problem", [
    ("notebooks/depth.html", [code_cell(lines(25)), code_cell(lines(16))],
     "notebooks/depth.html shows 41 lines of code, over the limit of 40 for a results chapter"),
    ("notebooks/depth.html", [code_cell(lines(25)), code_cell(lines(15))], None),
    ("notebooks/depth.html", [code_cell(lines(25)), code_cell(lines(100), "hide-input"),
                              code_cell(lines(100), "remove-input")], None),
    ("notebooks/update_rules.html", [code_cell(lines(100))], None),   # derives the rules in code
    ("notebooks/train.html", [code_cell(lines(100))], None),          # a worked training call
    ("book/method.html", [code_cell(lines(100))], None),              # not a chapter notebook
])
def test_code_problem_limits_visible_code_in_results_chapters(tmp_path, name, cells, problem):
    page = tmp_path / name
    page.parent.mkdir(parents=True)
    page.write_text(chapter(*cells))
    found = browser_check.code_problem(page, tmp_path)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)


def test_intro_figure_is_reproduced_by_its_script(tmp_path):
    sys.path.insert(0, str(ROOT / "book"))
    import step_size_figure

    drawn = step_size_figure.main(tmp_path / "step_size.png")
    assert drawn.read_bytes() == (ROOT / "book" / "images" / "step_size.png").read_bytes()


@pytest.mark.skipif(not (Path(browser_check.CHROMIUM).exists() and Path(browser_check.CHROMEDRIVER).exists()),
                    reason="needs Debian's chromium and chromium-driver: make install")
def test_browser_check_catches_what_a_reader_would_see_broken(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "plot.png")
    (tmp_path / "good.html").write_text(
        '<div id="main-content"><h1 id="a">Good</h1><img src="plot.png">'
        '<p><strong>Figure 1.</strong> A plot.</p><figure><img src="plot.png"><figcaption>x</figcaption></figure>'
        '<a href="bad.html">next</a><a href="#a">top</a></div>')
    (tmp_path / "bad.html").write_text(
        '<div id="main-content"><img src="gone.png"><p><strong>Figure 1.</strong> Its plot never appeared.</p>'
        '<figure><figcaption>empty</figcaption></figure><a href="good.html#nowhere">x</a>'
        '<a href="missing.html">y</a><span class="math">\\(x\\)</span><script>notDefined()</script></div>')
    assert browser_check.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "ok   good.html" in out and "FAIL bad.html" in out
    bad = out.split("FAIL bad.html")[1]
    for problem in ["broken image http://127.0.0.1", "caption 'Figure 1.' with no image above it",
                    "figure without a loaded image: 'empty'", "link to missing anchor", "link to missing file",
                    "1 formulas not typeset", "JavaScript error: Uncaught ReferenceError: notDefined"]:
        assert problem in bad
    assert out.rstrip().endswith("browser check: 1 passed, 1 failed")


@pytest.mark.parametrize("body, word, spans", [
    ("<p>The grid puts them on the additive rule (`bias_rule: additive`).</p>", "bias_rule", 1),
    ("<p>A **bold** claim, and a lone ` mark.</p>", "claim", 2),
    # Sphinx and myst-nb markup: inline code, display math, a listing, a table's cells, a styled table, the title
    ('<head><title>a `b`</title><style>td ** x {}</style></head><p>Text with <code class="docutils literal notranslate">'
     '<span class="pre">a</span> <span class="pre">`literal`</span></code> and <span class="math notranslate '
     'nohighlight">\\(a ** b\\)</span>.</p><div class="math notranslate nohighlight">\\[x^{**}\\]</div>'
     '<div class="highlight"><pre>x ** 2  # `code`</pre></div><table><tr><td>*</td><td>*</td></tr></table>'
     "<p>Then <strong>bold</strong><br>done.</p>", None, 0),
])
def test_literal_markdown_finds_unrendered_syntax_in_prose_only(body, word, spans):
    snippets = browser_check.literal_markdown(f"<html>{body}</html>")
    assert len(snippets) == spans
    assert all(word in s for s in snippets)
