"""The suite's own layout: pytest imports test modules by basename (no packages under tests/), so two
test files with one name in different folders stop the whole run at collection."""

from __future__ import annotations

from collections import Counter

from perpline import REPO_ROOT


def test_no_two_test_modules_share_a_name() -> None:
    names = Counter(path.name for path in (REPO_ROOT / "tests").rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
