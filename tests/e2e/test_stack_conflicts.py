"""Two stacks on one machine, and the embedded broker's death, on the real stack.

- A second `perpline up` on the ports of a running stack refuses to start: it exits non-zero naming
  each port and the process holding it, and starts no component (it used to find the first stack's
  broker answering and run a second matcher, accounts processor, ... against it).
- The embedded broker keeps its records in memory only: when it dies the whole stack stops at once
  and says why (it used to be restarted empty under the running components).
The second test ends the module's stack, so it runs last.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from stackutil import Stack, running_stack, stack_pids

pytestmark = pytest.mark.e2e
REFUSAL_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory)


def _port(url: str) -> int:
    found = re.search(r"127\.0\.0\.1:(\d+)", url)
    assert found, url
    return int(found.group(1))


def test_a_second_stack_on_the_same_ports_refuses_to_start(stack: Stack, tmp_path: Path) -> None:
    kafka, clickhouse, api = _port(stack.value("kafka")), _port(stack.value("clickhouse")), _port(stack.api)
    marker = f"e2e-second-{uuid.uuid4().hex}"
    env = {**os.environ, "PERPLINE_STACK_ID": marker, "PERPLINE_INDEX_SOURCE": "none"}
    for key in ("PERPLINE_KAFKA_BOOTSTRAP", "PERPLINE_CLICKHOUSE_URL"):
        env.pop(key, None)
    second = subprocess.Popen([sys.executable, "-m", "perpline.cli", "up", "--free-ports", "--data-dir", str(tmp_path),
                               "--kafka-port", str(kafka), "--clickhouse-port", str(clickhouse), "--api-port", str(api)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        out, err = second.communicate(timeout=REFUSAL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        for pid in [second.pid, *stack_pids(marker)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        out, err = second.communicate()
        pytest.fail(f"the second stack did not refuse to start:\n{out[-3000:]}\n{err[-3000:]}")
    assert second.returncode != 0, out + err
    lines = err.splitlines()
    assert any(f"port {kafka} (broker) is in use by pid" in line and "perpline.broker" in line
               for line in lines), out + err
    assert any(f"port {clickhouse} (clickhouse) is in use by pid" in line and "perpline.ch.server" in line
               for line in lines), err
    assert any(f"port {api} (api) is in use by pid" in line and "perpline.api.main" in line for line in lines), err
    assert "started " not in out and not stack_pids(marker)  # no component of the second stack ran
    assert httpx.get(stack.api + "/readyz", timeout=10).status_code == 200  # the first one is untouched


def test_the_embedded_broker_dying_stops_the_whole_stack_at_once(stack: Stack) -> None:
    broker = [pid for pid in stack_pids(stack.marker)
              if b"perpline.broker.launch" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(broker) == 1
    killed = time.monotonic()
    os.kill(broker[0], signal.SIGKILL)
    code = stack.proc.wait(timeout=60)
    stopped_s = time.monotonic() - killed
    text = "\n".join(stack.lines)
    assert code == 1, text[-3000:]
    assert re.search(r"supervisor\s*\| broker DIED: broker died \(.*\) and is not restarted: the embedded broker "
                     r"keeps every record in memory only", text), text[-3000:]
    assert "STACK STOPPED: broker died" in text
    assert "restarting broker" not in text and "broker ready again" not in text
    assert stopped_s < 30, stopped_s
    time.sleep(1)
    assert not stack_pids(stack.marker), "a component outlived the stack"
