"""perpline: a USDT-margined perpetual-futures exchange built as a data-plane pipeline."""

from pathlib import Path

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parents[1]
