"""Load the matcher core compiled (the default) or as pure Python from its source (tests, benchmarks)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).with_name("core.py")
PURE_NAME = "perpline_matcher_core_pure"


def load_core(pure: bool = False) -> ModuleType:
    if not pure:
        return importlib.import_module("perpline.matcher.core")
    if PURE_NAME in sys.modules:
        return sys.modules[PURE_NAME]
    spec = importlib.util.spec_from_file_location(PURE_NAME, SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[PURE_NAME] = module
    spec.loader.exec_module(module)
    return module


def is_compiled(module: ModuleType) -> bool:
    return str(getattr(module, "__file__", "")).endswith(".so")
