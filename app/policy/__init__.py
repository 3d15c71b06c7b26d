"""Policy: base-branch policy files → decisions with reasons (see docs/policy.md).

Public surface: ``load_policy_dir`` / ``load_policy_files`` → ``PolicySet``; ``evaluate``,
``check_step``, ``authorize`` → ``Decision``; ``EvalContext`` and the ``SpendLedger`` port.
The git adapter (``app.policy.git_source``) is imported explicitly by the edges that need it.
"""

from app.policy.context import EvalContext, FileSpendLedger, NoSpend, SpendLedger
from app.policy.decision import Decision, Risk, RiskFactor, RuleMatch
from app.policy.engine import authorize, check_step, evaluate
from app.policy.loader import PolicySet, load_policy_dir, load_policy_files

__all__ = [
    "Decision",
    "EvalContext",
    "FileSpendLedger",
    "NoSpend",
    "PolicySet",
    "Risk",
    "RiskFactor",
    "RuleMatch",
    "SpendLedger",
    "authorize",
    "check_step",
    "evaluate",
    "load_policy_dir",
    "load_policy_files",
]
