"""Migrations: clickhouse/migrations/NNNN_name.sql applied once each, in order, recorded in schema_migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perpline import REPO_ROOT

MIGRATIONS_DIR = REPO_ROOT / "clickhouse" / "migrations"


def statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def apply_migrations(client: Any, migrations_dir: Path | None = None) -> list[str]:
    """Apply pending migrations; returns the names applied now (empty when up to date)."""
    directory = migrations_dir or MIGRATIONS_DIR
    client.command("CREATE TABLE IF NOT EXISTS schema_migrations (name String, applied_at DateTime64(3, 'UTC') "
                   "DEFAULT now64(3)) ENGINE = MergeTree ORDER BY name")
    done = {row[0] for row in client.query("SELECT name FROM schema_migrations").result_rows}
    applied = []
    for path in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        if path.name in done:
            continue
        for statement in statements(path.read_text()):
            client.command(statement)
        client.command(f"INSERT INTO schema_migrations (name) VALUES ('{path.name}')")
        applied.append(path.name)
    return applied
