"""Real-broker helpers for integration tests: start the embedded broker launcher, read topics.

Imported explicitly by the test modules (not a conftest.py, so nothing here is automatic).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from perpline import REPO_ROOT

PY = sys.executable
TANSU = {"PERPLINE_BROKER": "tansu"}  # the tests of Tansu's own launcher and quirks
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class BrokerProcess:
    proc: subprocess.Popen[bytes]
    bootstrap: str
    ready: dict[str, Any]
    metrics_port: int | None


def read_json_line(proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    """The first JSON line on proc's stdout, within timeout_s (raises on timeout or exit)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"process exited ({proc.wait(5)}) before printing a line")
                return dict(json.loads(line))
    raise TimeoutError(f"no line within {timeout_s} s")


def start_broker(*extra: str, metrics: bool = False, env: dict[str, str] | None = None) -> BrokerProcess:
    port = free_port()
    metrics_port = free_port() if metrics else None
    argv = [PY, "-m", "perpline.broker.launch", "--host", "127.0.0.1", "--port", str(port), *extra]
    if metrics_port:
        argv += ["--metrics-port", str(metrics_port)]
    proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})})
    try:
        ready = read_json_line(proc, READY_TIMEOUT_S)
    except BaseException:
        kill(proc)
        raise
    return BrokerProcess(proc, f"127.0.0.1:{port}", ready, metrics_port)


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(STOP_TIMEOUT_S)


@contextmanager
def running_broker(*extra: str, metrics: bool = False, env: dict[str, str] | None = None) -> Iterator[BrokerProcess]:
    broker = start_broker(*extra, metrics=metrics, env=env)
    try:
        yield broker
    finally:
        kill(broker.proc)


Record = tuple[str, dict[str, Any], int, int]  # key, value, partition, offset


def read_all(bootstrap: str, topic: str, partitions: int, *, timeout_s: float,
             done: Callable[[list[Record]], bool], settle_s: float = 0.5, committed: bool = True) -> list[Record]:
    """Every record of `topic` from the start, consumed until `done(records)` holds and no record
    came for settle_s, or timeout_s. Reads to the end by consuming: Tansu's high watermark can be
    wrong after multi-record batches."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
                         "enable.auto.commit": False,
                         "isolation.level": "read_committed" if committed else "read_uncommitted"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[Record] = []
    deadline, last = time.monotonic() + timeout_s, time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error():
                out.append(((msg.key() or b"").decode(), json.loads(msg.value()), msg.partition(), msg.offset()))
                last = time.monotonic()
            if time.monotonic() - last >= settle_s and done(out):
                break
    finally:
        consumer.close()
    return out


def at_least(n: int) -> Callable[[list[Record]], bool]:
    return lambda records: len(records) >= n


def child_pids(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")  # zombie = dead
