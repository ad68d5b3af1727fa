"""The documentation site (mkdocs.yml, docs/): it builds with ``mkdocs build --strict``,
has every page of its navigation, no internal link or anchor of any built page is broken,
and the home page renders in a headless browser."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from browser import chromium, find_browser  # tests/browser.py

ROOT = Path(__file__).resolve().parents[1]
# every page the navigation promises, as built (use_directory_urls: false)
PAGES = ["index.html", "install.html", "python.html", "cli.html", "cli-reference.html",
         "training.html", "results-store.html", "experiments.html", "evaluation.html",
         "scaling.html", "performance.html", "design.html", "extending.html", "api.html",
         "papers/adversarial-spheres.html", "papers/sparsification.html",
         "papers/hyperspherical-defense.html", "papers/weight-penalization.html",
         "papers/spectral-norm.html"]


class _Links(HTMLParser):
    """The ``id``s and the ``href``/``src`` targets of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)
            elif key in ("href", "src") and value and not (tag == "link" and key == "href"
                                                           and value.startswith("http")):
                self.targets.append(value)


def _parse(page: Path) -> _Links:
    links = _Links()
    links.feed(page.read_text(errors="replace"))
    return links


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs extra (make setup) installs mkdocs")
    out = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    return out


def broken_links(site: Path) -> list[str]:
    """Every internal ``href``/``src`` of the built pages whose file or anchor is missing."""
    pages = {p: _parse(p) for p in site.rglob("*.html")}
    errors = []
    for page, links in pages.items():
        for target in links.targets:
            url = urlsplit(target)
            if url.scheme or url.netloc or target.startswith(("mailto:", "javascript:", "data:")):
                continue
            base = site if url.path.startswith("/") else page.parent   # 404.html links from the root
            path = (base / unquote(url.path).lstrip("/")).resolve() if url.path else page
            if path.is_dir():
                path = path / "index.html"
            where = f"{page.relative_to(site)} -> {target}"
            if not path.is_file():
                errors.append(f"{where}: no such file")
            elif url.fragment and path.suffix == ".html":
                ids = pages[path].ids if path in pages else _parse(path).ids
                if unquote(url.fragment) not in ids:
                    errors.append(f"{where}: no anchor #{url.fragment}")
    return errors


def test_every_page_is_built(site):
    missing = [p for p in PAGES if not (site / p).is_file()]
    assert not missing, missing
    # the CLI reference is generated from --help: each subcommand's usage line is there
    reference = (site / "cli-reference.html").read_text()
    for command in ("list", "train", "evaluate", "reproduce", "results", "report"):
        assert f"Usage: advgeom {command} [OPTIONS]" in reference, command
    # the API reference is rendered from the docstrings
    api = (site / "api.html").read_text()
    for anchor in ("advgeom.eval.runner.evaluate", "advgeom.attacks.pgd.pgd", "advgeom.train.loop.fit"):
        assert f'id="{anchor}"' in api, anchor
    # the reports under results/ are pages of the site, reached from the experiments page
    assert (site / "results" / "demo" / "report.html").is_file()
    assert 'href="results/demo/report.html"' in (site / "experiments.html").read_text()


def test_no_broken_internal_links(site):
    errors = broken_links(site)
    assert not errors, "\n".join(errors[:50])


def test_the_link_check_finds_a_broken_link(site, tmp_path):
    page = tmp_path / "index.html"
    (tmp_path / "there.html").write_text('<h2 id="here">x</h2>')
    page.write_text('<a href="there.html#here">ok</a> <a href="gone.html">x</a> '
                    '<a href="there.html#nowhere">y</a> <a href="https://example.org/x">ext</a>')
    assert broken_links(tmp_path) == ["index.html -> gone.html: no such file",
                                      "index.html -> there.html#nowhere: no anchor #nowhere"]


def test_home_page_in_headless_chromium(site, tmp_path):
    browser = find_browser()
    dom = chromium(browser, tmp_path, "--virtual-time-budget=3000", "--dump-dom",
                   (site / "index.html").as_uri())
    assert re.search(r"<h1[^>]*>advgeom", dom)
    assert "Experiments and results" in dom and "make demo" in dom
    # the theme's script ran: the page is built with <html class="no-js">, which its bundle
    # replaces by "js" once loaded (a missing or broken bundle leaves "no-js")
    assert re.search(r'<html[^>]*class="no-js"', (site / "index.html").read_text())
    html_tag = re.search(r"<html[^>]*>", dom).group(0)
    assert re.search(r'class="[^"]*\bjs\b', html_tag) and "no-js" not in html_tag, html_tag
