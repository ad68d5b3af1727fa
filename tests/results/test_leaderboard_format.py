"""Issue 30, "The leaderboard and tables": eps written as people write them (8/255, not
0.0313725; 0.3 stays 0.3) and a link from each leaderboard row to its report where
one exists."""
import re
from types import SimpleNamespace

import pytest

from advgeom.results import ResultStore, Row
from advgeom.results.render import eps_text
from advgeom.results.site import build_site, record_report


@pytest.mark.parametrize("eps,text", [(8 / 255, "8/255"), (2 / 255, "2/255"), (16 / 255, "16/255"), (20 / 255, "20/255"), (1 / 17, "15/255"),
                                      (0.3, "0.3"), (0.1 + 0.2, "0.3"), (0.5, "0.5"), (1.0, "1"),
                                      (0.0, "0"), (1 / 3, "1/3"), (0.00125, "0.00125"),
                                      (0.123456789, "0.123457")])
def test_eps_text(eps, text):
    assert eps_text(eps) == text


def _rows(experiment, eps):
    common = dict(experiment=experiment, model="m", defense="d", seed=0, dataset="cifar10", norm="linf",
                  profile="quick", n=100)
    return [Row(attack="none", eps=0.0, metric="clean_accuracy", value=90.0, **common),
            Row(attack="pgd", eps=eps, metric="robust_accuracy", value=40.0, extra={"kind": "iterative"}, **common),
            Row(attack="worst_case", eps=eps, metric="robust_accuracy", value=39.0, **common)]


def test_leaderboard_eps_as_fractions_and_report_links(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # committed reports: results/<name>/report.md under the current directory
    (tmp_path / "results" / "committed").mkdir(parents=True)
    (tmp_path / "results" / "committed" / "report.md").write_text("# committed")
    store = ResultStore(tmp_path / "r.sqlite")
    store.add(_rows("stored", 8 / 255) + _rows("committed", 8 / 255) + _rows("none", 8 / 255))
    report = tmp_path / "runs" / "reports" / "stored" / "report.md"
    report.parent.mkdir(parents=True)
    report.write_text("# stored")
    record_report(store, SimpleNamespace(
        experiment=SimpleNamespace(name="stored", title="t", paper="p.txt", reference="", description=""),
        outcome=SimpleNamespace(comparisons=[], figures=[], notes=[]), path=report, seconds=1.0),
        profile="quick", seed=0)
    index = build_site(store, tmp_path / "runs" / "site")
    page = index.read_text()
    assert "cifar10 · linf · eps 8/255</h2>" in page and "eps 0.0313" not in page
    rows = re.findall(r'<tr>\s*<td><a href="experiments/([^.]+)\.html">(.*?)</tr>', page, flags=re.S)
    links = {exp: re.findall(r'<td><a href="([^"]+)">report</a></td>', cells) for exp, cells in rows}
    links = {exp: found[0] for exp, found in links.items() if found}
    assert links == {"stored": "../reports/stored/report.md", "committed": "../../results/committed/report.md"}
    assert (index.parent / links["stored"]).resolve() == report.resolve()
    assert {exp for exp, _ in rows} == {"stored", "committed", "none"}   # "none" has no report: no link
    exp = (tmp_path / "runs" / "site" / "experiments" / "stored.html").read_text()
    assert '<th class="num">8/255</th>' in exp
