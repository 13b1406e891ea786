"""API key material and the at-rest encryption of HMAC secrets.

Secrets must stay recoverable (the server recomputes the HMAC), so they are encrypted, not
hashed: Fernet (AES-128-CBC + HMAC-SHA256) with the key from PERPLINE_SECRET_KEY (a urlsafe
base64 32-byte key, `perpline admin gen-secret-key` prints one). Without it, a key file in the
data dir is used, created on first use (mode 0600) -- fine for the embedded stack, not for
production, where the key comes from a Kubernetes Secret.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "secret.key"
API_KEY_CHARS = 64


def new_api_key() -> str:
    return secrets.token_hex(API_KEY_CHARS // 2)


def new_api_secret() -> str:
    return secrets.token_hex(API_KEY_CHARS // 2)


def generate_secret_key() -> str:
    return Fernet.generate_key().decode()


def key_file(data_dir: Path) -> Path:
    return data_dir / KEY_FILE


def load_secret_key(data_dir: Path, configured: str = "") -> str:
    """The configured key (PERPLINE_SECRET_KEY, see perpline.config), else the data dir's key
    file (created when missing)."""
    if configured:
        return configured
    path = key_file(data_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(generate_secret_key())
    return path.read_text().strip()


@lru_cache(maxsize=4)
def _fernet(key: str) -> Fernet:
    return Fernet(key.encode())


def encrypt(key: str, secret: str) -> str:
    return _fernet(key).encrypt(secret.encode()).decode()


def decrypt(key: str, token: str) -> str | None:
    """The secret, or None when the token was not encrypted with this key."""
    try:
        return _fernet(key).decrypt(token.encode()).decode()
    except (InvalidToken, ValueError):
        return None
