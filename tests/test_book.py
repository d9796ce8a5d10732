"""The book's configuration and the link checking of tests/browser_check.py (the browser run is `make test`)."""

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
