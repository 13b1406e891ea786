"""Load the matcher core compiled (the default) or as pure Python from its source (tests, benchmarks).

`load_core(pure=False)` returns `perpline.matcher.core`, which Python resolves to the mypyc
extension (core.*.so) when one sits next to core.py: extension modules win over source.
A compiled module OLDER than core.py is stale (it would silently run old code), so then the
source is loaded instead, with a warning; `python -m perpline.matcher.build` refreshes it.
PERPLINE_MATCHER_PURE=1 in the environment forces the pure source everywhere.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

log = logging.getLogger("perpline.matcher.loader")

SOURCE = Path(__file__).with_name("core.py")
PURE_NAME = "perpline_matcher_core_pure"


def compiled_paths() -> list[Path]:
    """The mypyc extension(s) for core.py next to it (core.<abi>.so), if built."""
    return sorted(SOURCE.parent.glob("core.*.so"))


def compiled_files() -> list[Path]:
    """Every file of a build: the module shim core.*.so and the code library core__mypyc.*.so."""
    return [*compiled_paths(), *sorted(SOURCE.parent.glob("core__mypyc.*.so"))]


def compiled_fresh() -> bool:
    """True when a compiled core exists and none of its files is older than core.py."""
    source_mtime = SOURCE.stat().st_mtime
    return bool(compiled_paths()) and all(p.stat().st_mtime >= source_mtime for p in compiled_files())


def pure_forced() -> bool:
    return os.environ.get("PERPLINE_MATCHER_PURE") == "1"


def load_core(pure: bool = False) -> ModuleType:
    if not pure and not pure_forced():
        if compiled_fresh() or not compiled_paths():
            return importlib.import_module("perpline.matcher.core")
        log.warning("compiled matcher core is older than core.py; using the pure source "
                    "(run `python -m perpline.matcher.build`)")
    return _load_pure()


def _load_pure() -> ModuleType:
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
