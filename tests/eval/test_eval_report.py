"""Text rendering of evaluation checks: the per-check listing and the one-line summary."""
import pytest

from advgeom.errors import AdvgeomError
from advgeom.eval.checks import CheckReport, CheckResult
from advgeom.eval.report import format_checks, format_report, summarize_checks


def _report() -> CheckReport:
    return CheckReport([CheckResult("threat_model", "pass", "inside the ball"),
                        CheckResult("gradient_masking", "fail", "square 17% < pgd 43%"),
                        CheckResult("zero_gradients", "warn", "zero on 5%"),
                        CheckResult("unbounded_attack", "skip", "not run"),
                        CheckResult("monotone_in_eps", "pass", "non-increasing")])


def test_format_checks_lists_every_check_with_its_status():
    text = format_checks(_report())
    assert text.splitlines()[0] == "Checks (1 failed, 1 warnings):"
    assert "  FAIL gradient_masking: square 17% < pgd 43%" in text.splitlines()
    assert len(text.splitlines()) == 6
    assert format_checks(CheckReport()) == "Checks: not run"


def test_summary_counts_statuses_and_spells_out_failures_and_warnings():
    assert summarize_checks(_report()) == ("2 pass, 1 fail, 1 warn, 1 skip; "
                                           "FAIL gradient_masking: square 17% < pgd 43%; "
                                           "WARN zero_gradients: zero on 5%")
    assert summarize_checks(CheckReport([CheckResult("a", "pass", "ok")])) == "1 pass"
    assert summarize_checks(CheckReport()) == "checks not run"


def test_format_report_refuses_what_is_not_a_result():
    for bad in (None, {"rows": []}, "report"):
        with pytest.raises(AdvgeomError, match="format_report needs an evaluation result"):
            format_report(bad)
