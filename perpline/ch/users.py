"""The embedded ClickHouse's two users and their generated passwords.

chdb has no users of its own: without these, any local process could read every ledger and
DROP TABLE. The server (perpline.ch.server) checks every statement against these users;
`perpline up` hands the admin URL to the components that write and the reader URL to the API
and notebooks. Credentials travel in the URL (http://user:password@host:port), as for a
ClickHouse server, so one variable (PERPLINE_CLICKHOUSE_URL) configures every client.

- `default`: full rights (migrations, the ledger sink, the reconciler, tests that inject faults).
- `auditor`: reads only (SELECT, SHOW, DESCRIBE, EXISTS, EXPLAIN), for the API's history,
  notebooks and auditors.

Each password is generated once (secrets.token_urlsafe) into <users_dir>/<user>.password,
mode 0600 in a 0700 directory, and read from there afterwards.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

ADMIN_USER = "default"
READER_USER = "auditor"
USERS = (ADMIN_USER, READER_USER)
PASSWORD_BYTES = 24  # token_urlsafe(24): 32 characters, 192 bits
USERS_DIR_NAME = "clickhouse-users"  # under PERPLINE_DATA_DIR: survives the embedded stack's clean start


def password_file(users_dir: Path, user: str) -> Path:
    assert user in USERS, user
    return users_dir / f"{user}.password"


def ensure_passwords(users_dir: Path) -> dict[str, str]:
    """user -> password, generating the missing ones (O_EXCL: a concurrent start cannot overwrite one)."""
    users_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for user in USERS:
        path = password_file(users_dir, user)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(PASSWORD_BYTES))
    return {user: read_password(users_dir, user) for user in USERS}


def read_password(users_dir: Path, user: str) -> str:
    password = password_file(users_dir, user).read_text().strip()
    assert password, f"empty password file for {user} in {users_dir}"
    return password


def with_credentials(url: str, user: str, password: str) -> str:
    """The URL with user:password in it (any earlier credentials replaced)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redacted(url: str) -> str:
    """The URL with its password replaced by ***, for logs and notebook output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return with_credentials(url, parts.username or "", "***").replace("%2A%2A%2A", "***")
