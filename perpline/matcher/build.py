"""Compile the matcher core with mypyc, in place: perpline/matcher/core.*.so next to core.py.

Idempotent: skipped when the compiled module is not older than the source (see
loader.compiled_fresh). Build files go to build/ (ignored by git).
`python -m perpline.matcher.build [--force]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from perpline import REPO_ROOT
from perpline.matcher.loader import SOURCE, compiled_files, compiled_fresh, compiled_paths


def _mypyc_argv() -> list[str]:
    mypyc = Path(sys.executable).with_name("mypyc")
    return [str(mypyc) if mypyc.exists() else "mypyc", str(SOURCE.relative_to(REPO_ROOT))]


def build(force: bool = False) -> Path:
    if not force and compiled_fresh():
        return compiled_paths()[0]
    for stale in compiled_files():
        stale.unlink()
    done = subprocess.run(_mypyc_argv(), cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"mypyc failed with exit code {done.returncode}")
    if not compiled_paths():  # some mypyc versions write the extension at the repo root
        for found in [*REPO_ROOT.glob("core.*.so"), *REPO_ROOT.glob("core__mypyc.*.so")]:
            shutil.move(str(found), SOURCE.parent / found.name)
    built = compiled_paths()
    assert built, "mypyc produced no extension module"
    for path in compiled_files():  # setuptools copies unchanged outputs with their old mtime
        os.utime(path)
    assert compiled_fresh(), "compiled module older than its source"
    return built[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="perpline-matcher-build")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    path = build(args.force)
    print(f"matcher core compiled: {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
