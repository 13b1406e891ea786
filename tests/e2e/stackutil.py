"""Start the whole stack as `make up` does (free ports, a temporary data dir) for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from perpline.stack.supervisor import free_port

READY_RE = re.compile(r"perpline ready: api=(http://\S+)")
START_TIMEOUT_S = 180


def stack_pids(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


class Stack:
    def __init__(self, tmp: Path, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = tmp
        self.marker = f"PERPLINE_STACK_ID=e2e-{uuid.uuid4().hex}"
        env = {**os.environ, "PERPLINE_STACK_ID": self.marker.split("=", 1)[1]}
        for key in ("PERPLINE_KAFKA_BOOTSTRAP", "PERPLINE_CLICKHOUSE_URL"):
            env.pop(key, None)
        env.setdefault("PERPLINE_INDEX_SOURCE", "none")  # tests write prices.index themselves when they need it
        env.update(extra_env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "perpline.cli", "up", "--free-ports", "--data-dir", str(tmp)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.api = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            found = READY_RE.search(line)
            if found:
                self.api = found.group(1)
            if self.api and "ready in" in line:  # the last line of the announcement
                self.ready.set()

    def value(self, name: str) -> str:
        for line in self.lines:
            found = re.search(rf"{name}=(\S+)", line)
            if found:
                return found.group(1)
        raise AssertionError(f"{name} not printed by perpline up")

    def clickhouse(self, admin: bool = False) -> str:
        """The embedded ClickHouse's URL for the read-only user `perpline up` prints, or the admin's
        (from the password file in the data dir) for tests that write faults into the ledger."""
        from perpline.ch.users import ADMIN_USER, USERS_DIR_NAME, read_password, with_credentials  # noqa: PLC0415

        reader = self.value("PERPLINE_CLICKHOUSE_URL")
        return with_credentials(reader, ADMIN_USER, read_password(self.data_dir / USERS_DIR_NAME, ADMIN_USER)) \
            if admin else reader

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def running_stack(tmp_path_factory: pytest.TempPathFactory, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("stack"), extra_env)
    if not s.ready.wait(START_TIMEOUT_S):
        s.proc.kill()
        pytest.fail("stack not ready in time:\n" + "\n".join(s.lines[-80:]))
    yield s
    if s.proc.poll() is None:
        s.proc.send_signal(signal.SIGTERM)
        try:
            s.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            s.proc.kill()
    for pid in stack_pids(s.marker):  # nothing of this stack may outlive the module
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass




def kill_component(stack: Stack, module: str) -> str:
    """SIGKILL the stack's process running `module` (e.g. "perpline.pipelines.accounts"); returns the
    module, or "nothing" if no such process was running."""
    for pid in stack_pids(stack.marker):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if module in cmdline:
            os.kill(pid, signal.SIGKILL)
            return module
    return "nothing"


@contextlib.contextmanager
def api_replica(stack: Stack, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """Another API process on the same stack, as Kubernetes runs 2-12 of them: the stack's own API
    command line and environment (read from /proc, so whatever the stack was started with) on a free
    port. Yields its base URL; stopped on exit (and with the stack, which it is marked as part of)."""


    argv, env = _component_command(stack, "perpline.api.main")
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    host = argv[argv.index("--host") + 1]
    env = {**env, "PERPLINE_METRICS_PORT": "0", **(extra_env or {})}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(httpx, url):
            assert proc.poll() is None, f"API replica exited with {proc.returncode}"
            assert time.monotonic() < deadline, "API replica not ready in time"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _ready(httpx: object, url: str) -> bool:
    try:
        return bool(httpx.get(url + "/readyz", timeout=2).status_code == 200)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 (not listening yet)
        return False


def _component_command(stack: Stack, module: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the stack's process running `module`."""
    for pid in stack_pids(stack.marker):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
            raw_env = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
        except OSError:
            continue
        if module in argv:
            return argv, dict(item.split("=", 1) for item in raw_env if "=" in item)
    raise AssertionError(f"no {module} process in the stack")


def admin(stack: Stack, *args: str) -> object:
    """Run `perpline admin ...` against the stack; returns its JSON output."""
    import json  # noqa: PLC0415

    env = {**os.environ, "PERPLINE_KAFKA_BOOTSTRAP": stack.value("kafka"), "PERPLINE_DATA_DIR": str(stack.data_dir)}
    done = subprocess.run([sys.executable, "-m", "perpline.cli", "admin", *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)
