"""`advgeom report` (the static site) and `advgeom results`: page content from a small
database, the CLI's views and errors, and the leaderboard in a real headless browser."""
import html
import re
import shutil

import pytest
from typer.testing import CliRunner

from advgeom.cli import app
from advgeom.errors import AdvgeomError
from advgeom.results import ResultStore
from advgeom.results.site import build_site
from browser import chromium, find_browser  # tests/browser.py

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _text(page):
    """The visible text of a page, whitespace collapsed."""
    body = re.sub(r"<script.*?</script>|<style.*?</style>", "", page.read_text(), flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def test_index_leaderboard_content(results_db, tmp_path):
    index = build_site(ResultStore(results_db), tmp_path / "site")
    assert index == tmp_path / "site" / "index.html"
    page = index.read_text()
    text = _text(index)
    assert "mnist · linf · eps 0.3" in text and "mnist · linf · eps 0.1" in text
    # one leaderboard row: experiment, model, defense, profile, seed, n, clean, paper's attack, suite,
    # worst, checks, commit
    # each number with its 95% Wilson interval over n (none where the value is not a count of n)
    assert ("sparsity-table1 nielsen_cnn4 front_end quick 0 300 99.33 [97.6, 99.8] 43.33 ✗ [37.8, 49.0] pgd "
            "16.50 standard 14.67 ✗ [11.1, 19.1] ✗ failed: gradient_masking abc123def456") in text
    assert ("at-mnist madry_mnist_cnn pgd_at quick 0 300 98.50 — 89.00 [85.0, 92.1] apgd-ce → apgd-t → fab-t → "
            "square 89.00 [85.0, 92.1] pass (1 check)") in text
    assert ("demo hyper_mnist_cnn natural quick 0 300 97.67 [95.3, 98.9] 0.00 [0.0, 1.3] pgd — 0.00 [0.0, 1.3] "
            "pass (2 checks) abc123def456") in text
    assert page.count('<tr class="failed">') == 1 and 'class="check-failed"' in page
    # the checks as one compact table: a column per check, a row per evaluation, pass/fail per cell
    assert ("Sanity checks Each evaluation's checks (Carlini et al. 2019): ✓ pass, ! warn, ✗ fail; hover a cell "
            "for its message. experiment model profile seed n gradient_masking monotone threat_model "
            "demo hyper_mnist_cnn quick 0 300 — ✓ pass ✓ pass at-mnist madry_mnist_cnn quick 0 300 — ✓ pass — "
            "sparsity-table1 nielsen_cnn4 quick 0 300 ✗ fail ✓ pass —") in text
    assert 'title="gradient_masking msg"' in page
    assert 'href="experiments/spheres-relu.html"' in page and 'href="experiments/demo.html"' in page
    # sortable with an inline script; nothing is fetched from the network
    assert "<script>" in page and 'class="sortable leaderboard"' in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)


def test_experiment_pages(results_db, tmp_path):
    build_site(ResultStore(results_db), tmp_path / "site")
    exp = tmp_path / "site" / "experiments" / "spheres-relu.html"
    text, page = _text(exp), exp.read_text()
    assert "spheres-relu: Rare random errors" in text
    assert "nearest error l2 0.31 — — 0.18 — +0.13 d=100" in text
    assert "random errors 5.00 — — — — — count" in text
    assert "200k random samples <b>escaped</b>" in text  # notes are escaped, not raw HTML
    assert "advgeom reproduce spheres-relu --profile quick" in text and "fedcba987654" in text
    img = re.search(r'<img src="([^"]+)"', page).group(1)
    assert img == "spheres-relu/quick-seed0/accuracy_vs_eps.png"
    assert (exp.parent / img).read_bytes().startswith(b"\x89PNG")  # written out of the database
    assert "figs/gone.png could not be read when the report was stored" in text
    demo = _text(tmp_path / "site" / "experiments" / "sparsity-table1.html")
    assert "clean accuracy 99.33% 95% interval [97.6, 99.8] · checks: ✗ failed: gradient_masking" in demo
    # worst case last, flagged; every number with its 95% interval over n (none where it is not a count)
    assert ("fgsm 80.00 [75.1, 84.1] pgd 43.33 ✗ [37.8, 49.0] square 17.33 ✗ [13.5, 22.0] standard 16.50 "
            "worst_case 14.67 ✗ [11.1, 19.1]") in demo
    assert "gradient_masking monotone ✗ fail ✓ pass" in demo  # its checks, a compact table
    assert "advgeom evaluate --experiment demo" in demo  # environment of the rows' run


def test_site_regenerates_from_the_database_alone(results_db, tmp_path):
    out = tmp_path / "site"
    build_site(ResultStore(results_db), out)
    (out / "experiments" / "stale.html").write_text("old")
    shutil.rmtree(tmp_path / "figs")  # the experiment's own figure files are gone
    build_site(ResultStore(results_db), out)
    assert not (out / "experiments" / "stale.html").exists()
    assert (out / "experiments" / "spheres-relu" / "quick-seed0" / "accuracy_vs_eps.png").is_file()


def test_site_never_rewrites_a_folder_it_did_not_write(results_db, tmp_path):
    user = tmp_path / "mine"
    (user / "experiments").mkdir(parents=True)
    (user / "experiments" / "precious.txt").write_text("keep")
    (user / "index.html").write_text("my page")
    out = _run("report", "--db", results_db, "--out", user)
    assert out.exit_code == 2 and out.output.strip().count("\n") == 0, out.output
    assert "did not write" in out.output
    assert (user / "experiments" / "precious.txt").read_text() == "keep"
    assert (user / "index.html").read_text() == "my page"
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = _run("report", "--db", results_db, "--out", afile)
    assert out.exit_code == 2 and "is a file" in out.output and afile.read_text() == "x"
    empty = tmp_path / "empty"
    empty.mkdir()   # an empty folder is fine, and once written it is the site's to rewrite
    assert _run("report", "--db", results_db, "--out", empty).exit_code == 0
    assert _run("report", "--db", results_db, "--out", empty).exit_code == 0
    (empty / ".advgeom-site").unlink()   # a site written before the mark is known by its title
    assert _run("report", "--db", results_db, "--out", empty).exit_code == 0


def test_results_command_views(results_db):
    out = _run("results", "--db", results_db, "--experiment", "demo")
    assert out.exit_code == 0, out.output
    assert "demo · hyper_mnist_cnn · natural · mnist linf (quick, seed 0, n 300)" in out.output
    assert "clean 97.67% (95% interval [95.3, 98.9]) · checks: pass (2 checks)" in out.output
    assert re.search(r"worst_case\s+40\.50\s+0\.00", out.output)
    assert max(len(line) for line in out.output.splitlines()) <= 100
    assert out.output.index(" pgd ") < out.output.index(" worst_case ")
    full = _run("results", "--db", results_db)
    assert full.exit_code == 0 and max(len(line) for line in full.output.splitlines()) <= 100
    assert re.search(r"square\s+17\.33 ✗", full.output)  # a number a failed check concerns is marked
    long = _run("results", "--db", results_db, "--long", "--experiment", "demo")
    assert long.exit_code == 0 and long.output.startswith("15 rows from")
    csv = _run("results", "--db", results_db, "--format", "csv")
    assert csv.output.startswith("experiment,model,defense,attack,eps")
    report = _run("report", "--db", results_db, "--out", results_db.parent / "site", "--open")
    assert report.exit_code == 0, report.output
    assert report.output.strip() == str((results_db.parent / "site" / "index.html").resolve())


def test_bad_input_is_one_line_exit_2(tmp_path, results_db):
    empty = tmp_path / "empty.sqlite"
    ResultStore(empty)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [(["results", "--db", tmp_path / "none.sqlite"], "no results database"),
             (["report", "--db", tmp_path / "none.sqlite"], "no results database"),
             (["results", "--db", empty], "holds no results"),
             (["report", "--db", empty, "--out", tmp_path / "s"], "holds no results"),
             (["results", "--db", results_db, "--experiment", "nope"], "no results for experiment 'nope'"),
             (["report", "--db", results_db, "--out", blocker / "site"], "cannot write the report")]
    for args, msg in cases:
        out = _run(*args)
        assert out.exit_code == 2, (args, out.output)
        assert msg in out.output and out.output.strip().count("\n") == 0, out.output
    assert not (tmp_path / "none.sqlite").exists()
    with pytest.raises(AdvgeomError, match="holds no results"):
        build_site(ResultStore(empty), tmp_path / "s")
    for cmd in ("results", "report"):
        assert "Usage" in _run(cmd, "--help").output


# ---------------------------------------------------------------------------
# a real browser


HARNESS = """<!DOCTYPE html><html><body><div id="out">pending</div>
<iframe id="f" src="site/index.html" width="1200" height="800"></iframe>
<script>
document.getElementById("f").addEventListener("load", function () {
  var t = this.contentDocument.querySelectorAll("table.leaderboard")[1];
  var order = function () { return Array.prototype.map.call(t.tBodies[0].rows,
                                     function (r) { return r.cells[1].textContent; }).join(","); };
  var worst = t.querySelectorAll("th")[9];
  worst.click(); var up = order(); worst.click();
  var c = this.contentDocument.querySelector("table.checks");
  var models = function () { return Array.prototype.map.call(c.tBodies[0].rows,
                                      function (r) { return r.cells[1].textContent; }).join(","); };
  var masking = c.querySelectorAll("th")[5];
  masking.click(); var fails = models();
  document.getElementById("out").textContent = "asc=" + up + ";desc=" + order() + ";checks=" + masking.textContent
    + ":" + fails;
});
</script></body></html>"""


def test_leaderboard_in_headlesschromium(results_db, tmp_path):
    browser = find_browser()
    index = build_site(ResultStore(results_db), tmp_path / "site")
    dom = chromium(browser, tmp_path, "--dump-dom", index.as_uri())
    for number in ("99.33", "43.33", "16.50", "14.67", "97.67", "abc123def456"):
        assert number in dom
    assert 'class="check-failed"' in dom and "✗ failed: gradient_masking" in dom
    assert '<table class="sortable checks">' in dom and 'class="check check-fail"' in dom
    assert re.search(r'<tr class="failed">\s*<td><a href="experiments/sparsity-table1.html"', dom)
    shot = tmp_path / "leaderboard.png"
    chromium(browser, tmp_path, f"--screenshot={shot}", "--window-size=1280,1000", index.as_uri())
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
    # the inline script sorts by a clicked column (worst case: 0.00, 14.67, 89.00, then reversed)
    (tmp_path / "harness.html").write_text(HARNESS)
    dom = chromium(browser, tmp_path, "--virtual-time-budget=5000", "--dump-dom",
                    (tmp_path / "harness.html").as_uri())
    assert ("asc=hyper_mnist_cnn,nielsen_cnn4,madry_mnist_cnn;desc=madry_mnist_cnn,nielsen_cnn4,hyper_mnist_cnn"
            in dom)
    # the checks table sorts too: by gradient_masking, the failed evaluation first
    assert ";checks=gradient_masking:nielsen_cnn4,hyper_mnist_cnn,madry_mnist_cnn" in dom
