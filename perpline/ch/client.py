"""clickhouse-connect clients from a URL: the same code for the embedded server and a real one."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx


def get_client(url: str, **overrides: Any) -> Any:
    """A client for http(s)://[user:password@]host:port[/database]."""
    parts = urlsplit(url)
    database = parts.path.strip("/") or "default"
    kwargs: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1", "port": parts.port or (8443 if parts.scheme == "https" else 8123),
        "username": unquote(parts.username or "default"), "password": unquote(parts.password or ""),
        "database": database, "secure": parts.scheme == "https", "send_receive_timeout": 60,
        "settings": {}, "autogenerate_session_id": False,
    }
    kwargs.update(overrides)
    import clickhouse_connect  # noqa: PLC0415 (about 0.3 s of CPU: imported by the first client, not at every start)

    return clickhouse_connect.get_client(**kwargs)


def wait_ready(url: str, timeout_s: float) -> None:
    """Wait until the server answers /ping; raises TimeoutError naming the URL."""
    parts = urlsplit(url)
    ping = f"{parts.scheme}://{parts.hostname}:{parts.port}/ping"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(ping, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"ClickHouse at {ping} not ready in {timeout_s:.0f} s")
        time.sleep(0.2)
