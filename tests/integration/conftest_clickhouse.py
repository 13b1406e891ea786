"""An embedded ClickHouse server for integration tests, with the migrations applied.

Imported explicitly by the test modules (not a conftest.py, so nothing here is automatic).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from perpline.ch.client import get_client, wait_ready
from perpline.ch.migrate import apply_migrations
from perpline.ch.users import ADMIN_USER, USERS_DIR_NAME, ensure_passwords, with_credentials
from perpline.stack.supervisor import free_port


@contextmanager
def migrated_clickhouse(tmp: Path) -> Iterator[Any]:
    """A clickhouse-connect client, as the admin, of a fresh embedded server whose data lives in `tmp`;
    the server is stopped on exit."""
    port = free_port()
    password = ensure_passwords(tmp / USERS_DIR_NAME)[ADMIN_USER]
    proc = subprocess.Popen([sys.executable, "-m", "perpline.ch.server", "--data-dir", str(tmp / "ch"),
                             "--users-dir", str(tmp / USERS_DIR_NAME), "--port", str(port)], stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}", 60)
        client = get_client(with_credentials(f"http://127.0.0.1:{port}", ADMIN_USER, password))
        apply_migrations(client)
        yield client
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
