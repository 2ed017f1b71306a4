"""The verdict type of the learners' "build it" exercises (each chapter's checks live in its package,
``symviz.chapters.<chapter>.checks``).

Each ``check_*`` function takes the learner's implementation, compares it with the tested reference
in symviz on random inputs, prints a friendly verdict and returns a :class:`CheckResult` (truthy when
correct). It never raises on a wrong answer: the message says what differed.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CheckResult", "verdict"]


@dataclass
class CheckResult:
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def _repr_markdown_(self) -> str:
        return ("✅ " if self.passed else "❌ ") + self.message

    def __repr__(self) -> str:
        return ("PASSED: " if self.passed else "NOT YET: ") + self.message


def verdict(passed: bool, ok: str, wrong: str) -> CheckResult:
    """Build, print and return a :class:`CheckResult`."""
    result = CheckResult(bool(passed), ok if passed else wrong)
    print(repr(result))
    return result
