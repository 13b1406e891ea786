"""A small process supervisor: one OS process per component, like pods on one machine.

- start in dependency order; a component starts when everything in `after` is ready;
- logs of every child are prefixed `name | ` on one stream;
- a child that dies is reported at once and restarted with exponential backoff, and must
  become ready again; one that dies more than `max_restarts` times in `window_s` stops
  the whole stack loudly (run() returns 1 naming it);
- a child marked `fatal` (the embedded broker: its records live in its memory only) is never
  restarted: its death stops the whole stack at once, also while another child is being
  restarted, and run() returns 1 with a line saying why;
- stop(): SIGTERM to each process group in reverse order, SIGKILL after the grace period;
  children get PR_SET_PDEATHSIG so they die with a SIGKILLed supervisor.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from perpline.stack import ports

Probe = Callable[[], bool]
MAX_COMPONENTS = 64
MAX_LINE_CHARS = 16 * 1024
TAIL_LINES = 50
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 8.0
LOOPBACK = "127.0.0.1"


class StackError(RuntimeError):
    pass


@dataclass
class ComponentSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    ready: Probe | None = None
    ready_timeout_s: float = 60.0
    after: list[str] = field(default_factory=list)
    restart: bool = True
    fatal: str = ""  # set: why this child's death cannot be survived; it stops the stack instead of a restart
    ports: list[int] = field(default_factory=list)  # TCP ports the child itself listens on (checked when ready)


@dataclass
class _Running:
    spec: ComponentSpec
    proc: subprocess.Popen[bytes] | None = None
    ready: bool = False
    restarts: deque[float] = field(default_factory=deque)
    total_restarts: int = 0
    backoff_s: float = BACKOFF_START_S
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_probe(url: str) -> Probe:
    def probe() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code < 300
        except httpx.HTTPError:
            return False
    return probe


def tcp_probe(host: str, port: int) -> Probe:
    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False
    return probe


def file_probe(path: str) -> Probe:
    return lambda: Path(path).exists()


def _why(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    def __init__(self, specs: list[ComponentSpec], *, max_restarts: int = 5, window_s: float = 60.0,
                 grace_s: float = 10.0, sink: IO[str] = sys.stdout) -> None:
        assert len(specs) <= MAX_COMPONENTS, "too many components"
        names = [s.name for s in specs]
        assert len(set(names)) == len(names), "component names must be unique"
        for s in specs:
            assert set(s.after) <= set(names), f"{s.name} depends on an unknown component"
        self.items = {s.name: _Running(s) for s in specs}
        self.order = names
        self.max_restarts, self.window_s, self.grace_s = max_restarts, window_s, grace_s
        self._signalled = False
        self.sink = sink
        self._sink_lock = threading.Lock()
        self._stop = threading.Event()
        self.failure: str | None = None

    # --- logging ---------------------------------------------------------------------------
    def say(self, name: str, line: str) -> None:
        with self._sink_lock:
            self.sink.write(f"{name:<12}| {line[:MAX_LINE_CHARS]}\n")
            self.sink.flush()

    def _pump(self, item: _Running, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            item.tail.append(line)
            self.say(item.spec.name, line)
        stream.close()

    # --- lifecycle -------------------------------------------------------------------------
    def _spawn(self, item: _Running) -> None:
        spec = item.spec
        proc = subprocess.Popen(spec.argv, env={**os.environ, **spec.env}, cwd=spec.cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_die_with_parent)
        item.proc, item.ready = proc, False
        assert proc.stdout is not None
        threading.Thread(target=self._pump, args=(item, proc.stdout), daemon=True, name=f"log-{spec.name}").start()
        self.say("supervisor", f"started {spec.name} pid={proc.pid}")

    def _wait_ready(self, item: _Running) -> None:
        deadline = time.monotonic() + item.spec.ready_timeout_s
        probe = item.spec.ready
        while not self._stop.is_set():
            assert item.proc is not None
            if item.proc.poll() is not None and item.spec.restart:
                held = "".join(f"; port {p} is held by {ports.holder(p)}" for p in item.spec.ports
                               if not ports.is_free(LOOPBACK, p))
                raise StackError(self._describe(item, f"exited with {item.proc.returncode} before it was ready{held}"))
            if self._fatal_death():
                raise StackError(str(self.failure))
            if (probe is None or probe()) and self._own_ports(item):
                item.ready = True
                return
            if time.monotonic() > deadline:
                raise StackError(self._describe(item, f"not ready after {item.spec.ready_timeout_s:.0f} s"))
            time.sleep(0.1)

    @staticmethod
    def _own_ports(item: _Running) -> bool:
        """Whether the child itself (its process group) listens on each of its ports: what answered the
        probe may be another stack's server on the same port. StackError naming the holder if not ours."""
        assert item.proc is not None
        for port in item.spec.ports:
            pids, listening = ports.listeners(port)
            if not listening:
                return False
            if not any(ports.process_group(pid) == item.proc.pid for pid in pids):
                raise StackError(f"component {item.spec.name}: port {port} answers, but not from the process "
                                 f"started here; it is held by {ports.holder(port)}")
        return True

    def _describe(self, item: _Running, what: str) -> str:
        tail = "\n".join(f"    {line}" for line in list(item.tail)[-20:])
        return f"component {item.spec.name} {what}; last log lines:\n{tail}"

    def start(self) -> None:
        """Start every component in dependency order and wait until all are ready."""
        pending = list(self.order)
        while pending:
            startable = [n for n in pending if all(self.items[d].ready for d in self.items[n].spec.after)]
            if not startable:
                raise StackError(f"dependency cycle among {pending}")
            for name in startable:  # start the whole wave, then wait for it
                self._spawn(self.items[name])
            for name in startable:
                self._wait_ready(self.items[name])
                self.say("supervisor", f"{name} ready")
                pending.remove(name)

    def run(self) -> int:
        """Watch the components until a stop is requested or one keeps dying; returns an exit code."""
        if threading.current_thread() is threading.main_thread():
            # A handler must not touch a lock the interrupted main thread may hold (Event.set inside
            # Event.wait deadlocks): it only raises a flag that the loop reads.
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        while not self._signalled and not self._stop.wait(0.2):
            for item in self.items.values():
                self._check(item)
        self.stop()
        if self.failure:
            self.say("supervisor", f"STACK STOPPED: {self.failure}")
            return 1
        return 0

    def _check(self, item: _Running) -> None:
        proc = item.proc
        if proc is None or proc.poll() is None:
            return
        code = proc.returncode
        if not item.spec.restart and code == 0:
            item.proc = None
            return
        item.ready = False
        if item.spec.fatal:
            self._fatal_death()
            return
        self.say("supervisor", f"{item.spec.name} DIED ({_why(code)})")
        now = time.monotonic()
        item.restarts.append(now)
        while item.restarts and now - item.restarts[0] > self.window_s:
            item.restarts.popleft()
        if len(item.restarts) > self.max_restarts:
            self.failure = f"{item.spec.name} died {len(item.restarts)} times in {self.window_s:.0f} s"
            self._stop.set()
            return
        self._restart(item)

    def _restart(self, item: _Running) -> None:
        self.say("supervisor", f"restarting {item.spec.name} in {item.backoff_s:.1f} s")
        if self._sleep(item.backoff_s):
            return
        item.backoff_s = min(BACKOFF_MAX_S, item.backoff_s * 2)
        item.total_restarts += 1
        self._spawn(item)
        try:
            self._wait_ready(item)
            item.backoff_s = BACKOFF_START_S
            self.say("supervisor", f"{item.spec.name} ready again")
        except StackError as err:
            if self.failure is None:  # a fatal death is said by run()
                self.say("supervisor", str(err).splitlines()[0])

    def _fatal_death(self) -> bool:
        """True (and the stack is stopping) when a child marked fatal is no longer running."""
        for item in self.items.values():
            proc = item.proc
            if not item.spec.fatal or proc is None or proc.poll() is None:
                continue
            if self.failure is None:
                self.failure = (f"{item.spec.name} died ({_why(proc.returncode)}) and is not restarted: "
                                f"{item.spec.fatal}; the whole stack stops")
                self.say("supervisor", f"{item.spec.name} DIED: {self.failure}")
            self._stop.set()
            return True
        return False

    def request_stop(self) -> None:
        self._stop.set()

    def _on_signal(self, *_: object) -> None:
        self._signalled = True

    def _sleep(self, seconds: float) -> bool:
        """Wait up to `seconds`; True as soon as a stop is requested or signalled."""
        deadline = time.monotonic() + seconds
        while not self._signalled and not self._fatal_death():
            if self._stop.wait(min(0.2, max(0.0, deadline - time.monotonic()))) or time.monotonic() >= deadline:
                return self._stop.is_set()
        return True

    def stop(self) -> None:
        """SIGTERM every process group in reverse order, SIGKILL what is left after the grace period."""
        self._stop.set()
        live = [self.items[n] for n in reversed(self.order) if self.items[n].proc is not None]
        for item in live:
            self._signal_group(item, signal.SIGTERM)
            self._wait_exit(item, self.grace_s / max(1, len(live)) + 1.0)
        deadline = time.monotonic() + self.grace_s
        for item in live:
            self._wait_exit(item, max(0.0, deadline - time.monotonic()))
            self._signal_group(item, signal.SIGKILL)
            self._wait_exit(item, 5.0)

    @staticmethod
    def _signal_group(item: _Running, sig: signal.Signals) -> None:
        assert item.proc is not None
        try:
            os.killpg(item.proc.pid, sig)
        except ProcessLookupError:
            pass

    @staticmethod
    def _wait_exit(item: _Running, timeout_s: float) -> None:
        assert item.proc is not None
        try:
            item.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass

    # --- status ----------------------------------------------------------------------------
    def pids(self) -> list[int]:
        return [i.proc.pid for i in self.items.values() if i.proc is not None and i.proc.poll() is None]

    def status(self) -> dict[str, dict[str, object]]:
        return {n: {"pid": i.proc.pid if i.proc else None, "ready": i.ready, "restarts": i.total_restarts}
                for n, i in self.items.items()}
