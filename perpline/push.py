"""Committed records pushed to the API's read model the moment they are final: a shortcut beside the
topics, never instead of them.

On the embedded broker a consumer sees a record about a quarter of its fetch wait after it was
written (docs/architecture.md, "The latency floor of each hop"): 5 ms a hop at 20 ms, and an order's
answer waits for two or three such hops into the API. A writer whose records are final (the accounts
processor after its transaction committed; the matcher after its WAL made its events durable and it
produced them; the risk process after the broker acknowledged a funding round) also sends them, as bytes,
to every API process connected to it. The read model applies a pushed record only where that cannot
change what it ends with (perpline.api.pushed): account events in offset order, matcher events in seq
order, funding rounds by their time, each at most once; whatever a push misses (a slow or broken
connection, a restarted writer, a gap) arrives through the topic as before.

Wire: TCP, each frame a 4-byte big-endian length then one msgpack `Frame`. The writer listens
(PERPLINE_PUSH_LISTEN, host:port); API processes connect (PERPLINE_PUSH_FEEDS, comma-separated). Bounds:
MAX_FRAME_BYTES per frame (a larger commit is not pushed: the topic carries it), MAX_SUBSCRIBERS
connections, MAX_QUEUED_BYTES waiting per connection (a reader that falls that far behind is dropped;
it reconnects and the topic fills what it missed).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable

import msgspec
from prometheus_client import Counter

from perpline.config import push_listen

log = logging.getLogger("perpline.push")

MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_SUBSCRIBERS = 64
MAX_QUEUED_BYTES = 16 * 1024 * 1024
RECONNECT_S = 0.5
RESOLVE_EVERY_S = 10.0
CONNECT_TIMEOUT_S = 1.0
HEAD = struct.Struct(">I")
NO_OFFSET = -1  # a frame ordered by the records' own sequence numbers, not by offsets

FRAMES_SENT = Counter("perpline_push_frames_sent_total", "frames pushed to connected readers", ["topic"])
FRAMES_SKIPPED = Counter("perpline_push_frames_skipped_total",
                         "commits not pushed (too large for one frame), left to the topic", ["topic"])
READERS_DROPPED = Counter("perpline_push_readers_dropped_total", "readers dropped (too far behind, or gone)")


class Frame(msgspec.Struct, array_like=True, frozen=True):
    """Records of one partition of one topic, final at the writer, oldest first.

    `offsets`: each value's offset (empty when the topic's consumers order by their own sequence
    numbers: `partition` is then NO_OFFSET). `clear_from`: the writer knows that no committed record
    of this partition lies in [clear_from, offsets[0]) -- only its own transaction markers do
    (NO_OFFSET: it does not know)."""

    topic: str
    partition: int
    clear_from: int
    offsets: list[int]
    values: list[bytes]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Frame)


def encode(frame: Frame) -> bytes:
    body = _encoder.encode(frame)
    return HEAD.pack(len(body)) + body


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"push address {address!r} is not host:port")
    return host, int(port)


class _Reader:
    """One connected reader: frames queued by the writer's thread, sent by this reader's own thread."""

    def __init__(self, sock: socket.socket, on_gone: Callable[[_Reader], None]) -> None:
        self.sock = sock
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closed = False
        self._on_gone = on_gone
        threading.Thread(target=self._send_loop, name="push-reader", daemon=True).start()

    def offer(self, data: bytes) -> bool:
        """Queue a frame; False (and the reader closed) when it is too far behind."""
        with self._cond:
            if self._closed:
                return False
            if self._queued + len(data) > MAX_QUEUED_BYTES:
                self._close_locked()
                return False
            self._queue.append(data)
            self._queued += len(data)
            self._cond.notify()
            return True

    def close(self) -> None:
        with self._cond:
            self._close_locked()

    def _close_locked(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.clear()
            self._cond.notify()
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes the sender if it is blocked on this socket
                self.sock.close()
            except OSError:
                pass

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    break
                data = self._queue.popleft()
                self._queued -= len(data)
            try:
                self.sock.sendall(data)
            except OSError:
                self.close()
                break
        self._on_gone(self)


class PushServer:
    """The writer's side: accepts readers and sends every published frame to each of them."""

    def __init__(self, address: str) -> None:
        host, port = parse_address(address)
        self._listener = socket.create_server((host, port), reuse_port=False)
        self.port = self._listener.getsockname()[1]
        self._readers: list[_Reader] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept_loop, name="push-accept", daemon=True).start()
        log.info("pushing committed records", extra={"address": f"{host}:{self.port}"})

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if len(self._readers) >= MAX_SUBSCRIBERS:
                    sock.close()
                    continue
                self._readers.append(_Reader(sock, self._gone))

    def _gone(self, reader: _Reader) -> None:
        with self._lock:
            if reader in self._readers:
                self._readers.remove(reader)
                READERS_DROPPED.inc()

    def readers(self) -> int:
        with self._lock:
            return len(self._readers)

    def publish(self, frame: Frame) -> None:
        """Send `frame` to every reader now connected (never blocks on a reader)."""
        with self._lock:
            readers = list(self._readers)
        if not readers:
            return
        data = encode(frame)
        if len(data) > MAX_FRAME_BYTES:
            FRAMES_SKIPPED.labels(frame.topic).inc()
            return
        for reader in readers:
            if not reader.offer(data):
                self._gone(reader)
        FRAMES_SENT.labels(frame.topic).inc()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            readers, self._readers = self._readers, []
        for reader in readers:
            reader.close()


def server_from_env() -> PushServer | None:
    """A push server on PERPLINE_PUSH_LISTEN, or None when it is unset or empty."""
    address = push_listen()
    return PushServer(address) if address else None


class PushClient:
    """The reader's side: for each writer address, one connection to every address its host resolves to
    (a Kubernetes headless Service names every pod; resolved again every RESOLVE_EVERY_S), each on its own
    thread, reconnecting while the address still resolves. Each frame is handed to `on_frame` on that
    thread. A frame that cannot be decoded drops the connection (it reconnects)."""

    def __init__(self, addresses: list[str], on_frame: Callable[[Frame], None]) -> None:
        self._addresses = [parse_address(a) for a in addresses if a.strip()]
        self._on_frame = on_frame
        self._stop = threading.Event()
        self._resolved: dict[tuple[str, int], set[str]] = {}
        self._count_lock = threading.Lock()
        self.connected = 0

    def start(self) -> None:
        for host, port in self._addresses:
            threading.Thread(target=self._follow, args=(host, port), name=f"push-follow-{port}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _follow(self, host: str, port: int) -> None:
        running: dict[str, threading.Thread] = {}
        while not self._stop.is_set():
            try:
                ips = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
            except OSError:
                ips = set()
            self._resolved[(host, port)] = ips
            for ip in ips:
                thread = running.get(ip)
                if thread is None or not thread.is_alive():
                    running[ip] = threading.Thread(target=self._run, args=(host, ip, port), name=f"push-feed-{port}",
                                                   daemon=True)
                    running[ip].start()
            self._stop.wait(RESOLVE_EVERY_S)

    def _run(self, host: str, ip: str, port: int) -> None:
        while not self._stop.is_set() and ip in self._resolved.get((host, port), set()):
            try:
                with socket.create_connection((ip, port), timeout=CONNECT_TIMEOUT_S) as sock:
                    sock.settimeout(None)
                    self._count(1)
                    try:
                        self._read(sock)
                    finally:
                        self._count(-1)
            except (OSError, ValueError, msgspec.DecodeError, msgspec.ValidationError):
                pass
            self._stop.wait(RECONNECT_S)

    def _count(self, change: int) -> None:
        with self._count_lock:
            self.connected += change

    def _read(self, sock: socket.socket) -> None:
        stream = sock.makefile("rb")
        while not self._stop.is_set():
            head = stream.read(HEAD.size)
            if len(head) < HEAD.size:
                return
            (size,) = HEAD.unpack(head)
            if size > MAX_FRAME_BYTES:
                raise ValueError(f"push frame of {size} bytes is over the bound")
            body = stream.read(size)
            if len(body) < size:
                return
            self._on_frame(_decoder.decode(body))


def wait_connected(client: PushClient, count: int, timeout_s: float) -> bool:
    """True once `client` holds `count` connections (tests)."""
    deadline = time.monotonic() + timeout_s
    while client.connected < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
