"""Compile the matcher core with mypyc, in place: perpline/matcher/core.*.so next to core.py.

Idempotent: skipped when the compiled module is newer than the source. Build files go
to build/ (ignored by git). `python -m perpline.matcher.build [--force]`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from perpline import REPO_ROOT

SOURCE = REPO_ROOT / "perpline" / "matcher" / "core.py"


def compiled_paths() -> list[Path]:
    return sorted(SOURCE.parent.glob("core.*.so"))


def up_to_date() -> bool:
    built = compiled_paths()
    return bool(built) and all(p.stat().st_mtime >= SOURCE.stat().st_mtime for p in built)


def build(force: bool = False) -> Path:
    if not force and up_to_date():
        return compiled_paths()[0]
    for stale in compiled_paths():
        stale.unlink()
    mypyc = Path(sys.executable).with_name("mypyc")
    argv = [str(mypyc) if mypyc.exists() else "mypyc", "perpline/matcher/core.py"]
    subprocess.run(argv, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    built = compiled_paths()
    if not built:  # mypyc writes the extension next to the package root or in place, by version
        for found in REPO_ROOT.glob("core.*.so"):
            shutil.move(str(found), SOURCE.parent / found.name)
        built = compiled_paths()
    assert built, "mypyc produced no extension module"
    return built[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="perpline-matcher-build")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    path = build(args.force)
    print(f"matcher core compiled: {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
