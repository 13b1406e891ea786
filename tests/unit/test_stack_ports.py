"""`perpline up` refuses ports another process holds, naming the port and the process, before it starts
or removes anything; and a second `perpline up` on the same data dir is refused."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

import pytest

from perpline.stack import ports, up


def _plan(tmp_path: Path, kafka_port: int) -> up.Plan:
    plan = up.make_plan(argparse.Namespace(demo=False, data_dir=str(tmp_path), api_host=None, api_port=None,
                                           free_ports=True, kafka_port=kafka_port, clickhouse_port=None))
    up.prepare_passwords(plan)
    up.components(plan)
    return plan


def test_a_taken_port_is_named_with_the_process_holding_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERPLINE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("PERPLINE_CLICKHOUSE_URL", raising=False)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert not ports.is_free("127.0.0.1", port)
        (line,) = up.taken_ports(_plan(tmp_path, port))
        assert line.startswith(f"port {port} (broker) is in use by pid {os.getpid()}: ")
    assert up.taken_ports(_plan(tmp_path, port)) == []


def test_a_data_dir_is_held_by_one_stack(tmp_path: Path) -> None:
    assert up.lock_data_dir(tmp_path) is None
    child = os.fork()
    if child == 0:  # another process: the flock is per open file, so a second `perpline up`
        os._exit(0 if up.lock_data_dir(tmp_path) == f"data dir {tmp_path} is in use by another perpline up "
                                                     f"(pid {os.getppid()})" else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
