"""advgeom.eval: honest robustness evaluation (docs/design.md "Evaluating robustness honestly").

``evaluate`` / ``run_evaluation`` run attacks at several eps with the per-sample worst
case, rejection-aware metrics, sanity checks and batch-level resumability;
``standard_suite`` runs AutoAttack's suite (standard/plus/rand) as a cascade;
``minimal_perturbations`` gives min-norm distributions; ``format_report`` prints it all.
"""
from advgeom.eval.checks import CheckConfig, CheckError, CheckReport, CheckResult
from advgeom.eval.minnorm import MinNormResult, minimal_perturbations
from advgeom.eval.rejection import RejectingModel, can_reject
from advgeom.eval.report import format_checks, format_report, format_rows
from advgeom.eval.runner import EvalResult, evaluate
from advgeom.attacks.spec import AttackSpec, parse_attack_spec, parse_attacks, parse_eps
from advgeom.eval.suite import VERSIONS, run_evaluation, standard_suite, suite_specs

__all__ = [
    "AttackSpec", "CheckConfig", "CheckError", "CheckReport", "CheckResult", "EvalResult",
    "MinNormResult", "RejectingModel", "can_reject", "evaluate", "format_checks",
    "format_report", "format_rows", "minimal_perturbations", "parse_attack_spec",
    "parse_attacks", "parse_eps", "run_evaluation", "standard_suite", "suite_specs", "VERSIONS",
]
