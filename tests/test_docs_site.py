"""The documentation site (mkdocs.yml): the strict build, its API and notebook
pages, and the screenshots of docs/screenshots.py.

The build and the screenshots need the docs extra (pip install ".[docs]") and
skip without it; the screenshots also need Chromium. The committed
screenshots are checked everywhere.
"""
import glob
import html
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS = ("site-home.png", "site-batchnorm-api.png", "site-notebook.png")
WINDOW = (1280, 1600)


def _need_docs_extra():
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocs_jupyter"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install '.[docs]')")


def _screenshots_module():
    spec = importlib.util.spec_from_file_location(
        "screenshots", os.path.join(REPO, "docs", "screenshots.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _text(path):
    """The visible text of an HTML file, tags removed and entities decoded."""
    with open(path, encoding="utf-8") as f:
        page = f.read()
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.DOTALL)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def assert_rendering(path):
    """A real rendering of a page: the window's size, many colours (antialiased
    text, code highlighting), and a content column that holds both ink and
    background rather than one flat colour."""
    from PIL import Image

    with Image.open(path) as im:
        assert im.size == WINDOW, f"{path}: size {im.size}, expected {WINDOW}"
        rgb = np.asarray(im.convert("RGB"))
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    assert len(colours) > 400, f"{path}: only {len(colours)} distinct colours"
    grey = rgb[100:1500, 280:1000].mean(axis=2)
    ink = np.mean(grey < 160)
    assert 0.01 < ink < 0.6, f"{path}: {ink:.1%} of the content column is dark"
    assert grey.std() > 20, f"{path}: the content column is nearly uniform (std {grey.std():.1f})"


@pytest.mark.integration
def test_strict_build(tmp_path):
    """mkdocs build --strict passes; the BatchNorm API page carries its
    docstring, each notebook has a page, the math is marked for KaTeX, and
    no page loads a script or stylesheet from another host."""
    _need_docs_extra()
    import tinynet as tn

    site = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if k != "TINYNET_DOCS_EXECUTE"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-f", os.path.join(REPO, "mkdocs.yml"), "-d", str(site)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    page = site / "api" / "batchnorm" / "index.html"
    assert page.is_file()
    assert 'id="tinynet.BatchNorm"' in page.read_text(encoding="utf-8")
    text = _text(page)
    summary = " ".join(tn.BatchNorm.__doc__.split("\n\n")[0].split())
    assert summary in text
    for word in ("Parameters", "num_features", "track_running_stats", "momentum",
                 "Attributes", "running_var"):
        assert word in text, f"{word!r} is missing from the BatchNorm API page"
    assert "Returns" in _text(site / "api" / "train" / "index.html")

    notebooks = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))
    assert notebooks, "no notebooks/*.ipynb"
    for nb in notebooks:
        name = os.path.splitext(os.path.basename(nb))[0]
        assert (site / "notebooks" / name / "index.html").is_file(), f"no page for {name}"

    assert 'class="arithmatex"' in (site / "backprop" / "index.html").read_text(encoding="utf-8")
    assert (site / "javascripts" / "katex" / "katex.min.js").is_file()
    for path in site.rglob("*.html"):
        page = path.read_text(encoding="utf-8")
        remote = re.findall(r'<(?:script|link)\b[^>]*(?:src|href)="(?:https?:)?//[^"]*"', page)
        assert not remote, f"{path.relative_to(site)} loads {remote[0]}"


@pytest.mark.integration
@pytest.mark.skipif(_screenshots_module().find_chromium() is None,
                    reason="Chromium is not installed (apt-get install chromium)")
def test_screenshot_command(tmp_path):
    """python docs/screenshots.py writes the three screenshots, each a real
    rendering, and the notebook's page shows outputs (it was executed)."""
    _need_docs_extra()
    out, site = tmp_path / "images", tmp_path / "site"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "docs", "screenshots.py"),
                           "--out", str(out), "--site-dir", str(site)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in SHOTS:
        assert_rendering(out / name)
    notebook = site / "notebooks" / _screenshots_module().NOTEBOOK / "index.html"
    assert "jp-OutputArea-output" in notebook.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", SHOTS)
def test_committed_screenshots(name):
    """The screenshots in docs/images are there and are real renderings."""
    path = os.path.join(REPO, "docs", "images", name)
    assert os.path.isfile(path), f"{path} is missing: python docs/screenshots.py"
    assert_rendering(path)


def test_the_notebook_link_hook_points_docs_links_at_the_site_pages():
    """docs/hooks/notebook_links.py: ../docs/<page>.md (right in notebooks/) becomes
    the site's ../../<page>/ on a notebook page; other links stay."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "notebook_links", os.path.join(REPO, "docs", "hooks", "notebook_links.py"))
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    html = ('<a href="../docs/backprop.md">x</a> <a href="../docs/normalization.md#4b-bn">y</a> '
            '<a href="../kernels/README.md">z</a> <a href="#top">t</a>')
    assert hook.rewrite(html) == ('<a href="../../backprop/">x</a> '
                                  '<a href="../../normalization/#4b-bn">y</a> '
                                  '<a href="../kernels/README.md">z</a> <a href="#top">t</a>')

    class Page:
        class file:
            src_uri = "architecture.md"
    assert hook.on_page_content(html, Page, None, None) == html  # only notebook pages
    Page.file.src_uri = "notebooks/01-backprop-by-hand.ipynb"
    assert "../../backprop/" in hook.on_page_content(html, Page, None, None)
