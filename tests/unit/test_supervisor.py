"""The supervisor with tiny child programs: order, readiness, restart, crash loop, clean stop."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from perpline.stack.supervisor import (
    ComponentSpec,
    StackError,
    Supervisor,
    file_probe,
    free_port,
    http_probe,
)

PY = sys.executable


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def server(port: int, delay_s: float = 0.3) -> list[str]:
    code = (f"import time, http.server; time.sleep({delay_s}); print('serving', flush=True); "
            f"http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()")
    return [PY, "-c", code]


def test_start_in_order_then_stop_cleanly_including_grandchildren(tmp_path: Path) -> None:
    port = free_port()
    grandchild = tmp_path / "gc.pid"
    spawner = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
               f"open('{grandchild}', 'w').write(str(p.pid)); print('spawned', flush=True); time.sleep(60)")
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    out = io.StringIO()
    sup = Supervisor([
        ComponentSpec("web", server(port), ready=http_probe(f"http://127.0.0.1:{port}/")),
        ComponentSpec("spawner", [PY, "-c", spawner], ready=file_probe(str(grandchild)), after=["web"]),
        ComponentSpec("stubborn", [PY, "-c", stubborn], after=["spawner"]),
    ], grace_s=2, sink=out)
    sup.start()
    log = out.getvalue()
    assert log.index("web ready") < log.index("started spawner") < log.index("started stubborn")
    assert "web         | serving" in log
    pids = sup.pids() + [int(grandchild.read_text())]
    assert all(alive(p) for p in pids)
    sup.stop()
    time.sleep(0.2)
    assert not [p for p in pids if alive(p)]


def test_dead_component_is_restarted_with_a_new_pid(tmp_path: Path) -> None:
    port = free_port()
    sup = Supervisor([ComponentSpec("web", server(port, 0.1), ready=http_probe(f"http://127.0.0.1:{port}/"))],
                     sink=io.StringIO())
    sup.start()
    first = sup.pids()[0]
    runner = threading.Thread(target=sup.run, daemon=True)
    runner.start()
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (sup.status()["web"]["restarts"] == 0 or not sup.status()["web"]["ready"]):
        time.sleep(0.1)
    assert sup.status()["web"]["restarts"] == 1 and sup.pids()[0] != first
    sup.request_stop()
    runner.join(20)
    assert not sup.pids()


def test_crash_loop_stops_the_whole_stack() -> None:
    out = io.StringIO()
    sup = Supervisor([ComponentSpec("steady", [PY, "-c", "import time; time.sleep(60)"]),
                      ComponentSpec("flaky", [PY, "-c", "import time; time.sleep(0.2); raise SystemExit(3)"])],
                     max_restarts=2, window_s=60, sink=out)
    sup.start()
    steady = sup.pids()[0]
    assert sup.run() == 1
    assert "flaky died 3 times" in out.getvalue() and "exit code 3" in out.getvalue()
    assert not alive(steady)


def test_component_that_never_gets_ready_is_named() -> None:
    sup = Supervisor([ComponentSpec("slow", [PY, "-c", "print('booting', flush=True); import time; time.sleep(60)"],
                                    ready=lambda: False, ready_timeout_s=1)], sink=io.StringIO())
    with pytest.raises(StackError, match="slow not ready") as err:
        sup.start()
    assert "booting" in str(err.value)
    sup.stop()


def test_a_fatal_component_that_dies_stops_the_whole_stack_at_once_and_is_not_restarted() -> None:
    out = io.StringIO()
    sup = Supervisor([ComponentSpec("store", [PY, "-c", "import time; time.sleep(60)"], fatal="its data is gone"),
                      ComponentSpec("steady", [PY, "-c", "import time; time.sleep(60)"], after=["store"])],
                     grace_s=2, sink=out)
    sup.start()
    store, steady = sup.pids()
    runner = threading.Thread(target=lambda: out.write(f"run returned {sup.run()}\n"), daemon=True)
    runner.start()
    started = time.monotonic()
    os.kill(store, signal.SIGKILL)
    runner.join(20)
    assert time.monotonic() - started < 5 and not alive(steady)
    log = out.getvalue()
    assert "STACK STOPPED: store died (signal SIGKILL) and is not restarted: its data is gone" in log
    assert "run returned 1" in log and "restarting store" not in log and log.count("started store") == 1


def test_a_fatal_death_during_another_components_restart_stops_the_stack() -> None:
    """A restart waits for readiness; a fatal death meanwhile must not wait for that to time out."""
    out = io.StringIO()
    flaky = "import sys, time; time.sleep(0.3); sys.exit(3)"
    marker = f"/tmp/never-{os.getpid()}"
    sup = Supervisor([ComponentSpec("store", [PY, "-c", "import time; time.sleep(60)"], fatal="its data is gone"),
                      ComponentSpec("flaky", [PY, "-c", flaky], ready_timeout_s=60)], grace_s=2, sink=out)
    sup.start()
    store = sup.pids()[0]
    sup.items["flaky"].spec.ready = file_probe(marker)  # once restarted, it never gets ready
    runner = threading.Thread(target=lambda: out.write(f"run returned {sup.run()}\n"), daemon=True)
    runner.start()
    deadline = time.monotonic() + 10
    while "restarting flaky" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # inside the restart's wait for readiness
    started = time.monotonic()
    os.kill(store, signal.SIGKILL)
    runner.join(30)
    assert time.monotonic() - started < 6, out.getvalue()
    assert "STACK STOPPED: store died" in out.getvalue() and "run returned 1" in out.getvalue()


def test_a_port_answered_by_another_process_is_named_not_taken_for_ready() -> None:
    """Another stack's server on the port answers the probe; the child started here is not the one listening."""
    port = free_port()
    other = subprocess.Popen(server(port, 0.0), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not http_probe(f"http://127.0.0.1:{port}/")() and time.monotonic() < deadline:
            time.sleep(0.05)
        sup = Supervisor([ComponentSpec("web", [PY, "-c", "import time; time.sleep(60)"], ports=[port],
                                        ready=http_probe(f"http://127.0.0.1:{port}/"))], sink=io.StringIO())
        with pytest.raises(StackError, match=f"port {port} answers, but not from the process started here") as err:
            sup.start()
        assert f"held by pid {other.pid}: " in str(err.value)
        sup.stop()
    finally:
        other.kill()
        other.wait()


def test_a_port_of_its_own_child_is_ready(tmp_path: Path) -> None:
    port = free_port()
    sup = Supervisor([ComponentSpec("web", server(port, 0.1), ports=[port],
                                    ready=http_probe(f"http://127.0.0.1:{port}/"))], sink=io.StringIO())
    sup.start()
    assert sup.status()["web"]["ready"]
    sup.stop()
