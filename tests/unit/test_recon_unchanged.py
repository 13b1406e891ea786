"""The reconciler's skip of unchanged passes is an optimisation, never a skipped check: without a
fingerprint of the rule tables (a ClickHouse user that cannot read system.parts) every pass runs."""

from __future__ import annotations

from typing import Any

from perpline.recon.runner import FINGERPRINT_SQL, Reconciler


class NoSystemTables:
    """A ClickHouse client that refuses system.parts and records the runs written."""

    def __init__(self) -> None:
        self.modes: list[str] = []

    def query(self, sql: str, **_: Any) -> Any:
        assert sql == FINGERPRINT_SQL, sql  # no rule here: the only query is the fingerprint's
        raise PermissionError("Not enough privileges to read system.parts")

    def insert(self, table: str, rows: list[list[Any]], column_names: list[str]) -> None:
        if table == "recon_runs":
            self.modes += [r[column_names.index("mode")] for r in rows]


def test_without_a_fingerprint_every_pass_runs_its_rules() -> None:
    client = NoSystemTables()
    recon = Reconciler(client, None, rules=[])
    recon.rules = []  # `rules or load_rules()`: an empty list would load them
    recon.quiet_ms = 0
    for _ in range(3):
        assert recon.run_if_changed() == []
    assert client.modes == ["incremental", "incremental", "incremental"]
