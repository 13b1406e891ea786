"""Embedded ClickHouse: one process owns a chdb data directory and serves the ClickHouse HTTP interface.

Every other process (ledger sink, API, reconciler, notebooks) uses clickhouse-connect
against it exactly as against a ClickHouse server. What the interface does:
- GET / and /ping answer "Ok.\\n"; GET /metrics is Prometheus text.
- The statement is `?query=` plus the body. An insert is `INSERT INTO t (cols) FORMAT F`
  followed by the data (in the body, after the first newline, or the whole body when the
  statement is in the URL); the data is streamed into chdb's `send_insert`.
- Request bodies may be chunked and compressed (lz4, zstd, gzip, deflate, br if available).
- `param_x=` become server-side query parameters; other unknown URL parameters are
  ClickHouse settings and become a SETTINGS clause on SELECT/WITH/INSERT; transport
  parameters (session, compression, http_*) are dropped.
- X-ClickHouse-Summary always; X-ClickHouse-Format only for statements that return rows;
  errors are HTTP 500 with chdb's text and X-ClickHouse-Exception-Code.
- Every statement needs a user (perpline.ch.users): HTTP basic auth as clickhouse-connect sends
  it, X-ClickHouse-User/X-ClickHouse-Key headers, or user=/password= URL parameters. No or wrong
  credentials: HTTP 401, code 516 AUTHENTICATION_FAILED, and nothing runs (the body is not even
  read). `default` has full rights; `auditor` may only read: its statement must be one read
  statement (SELECT, WITH, SHOW, DESCRIBE, EXISTS, EXPLAIN; no `;`, no formatted insert), and
  it runs on a chdb session with readonly=1, which ClickHouse itself enforces (no writes, no
  DDL, no table functions, no settings changes) whatever the text says.
  GET /, /ping and /metrics need no user: they run no statement.
One chdb connection serves all requests under a lock (chdb allows one process per data
directory, and a streaming insert blocks its connection), TZ=UTC; a second session of the
same data directory, set readonly, serves the reader under the same lock.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gzip
import hmac
import json
import logging
import os
import re
import signal
import socket
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from perpline.ch.users import ADMIN_USER, READER_USER, USERS_DIR_NAME, ensure_passwords
from perpline.obs import setup_logging

log = logging.getLogger("perpline.clickhouse")

MAX_BODY_BYTES = 256 * 1024 * 1024
CHUNK_BYTES = 1 << 20
TRANSPORT_PARAMS = {
    "query", "database", "default_format", "query_id", "session_id", "session_timeout", "session_check", "compress",
    "decompress", "enable_http_compression", "wait_end_of_query", "send_progress_in_http_headers", "user", "password",
    "quota_key", "buffer_size", "client_protocol_version", "role",
}
ROW_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "(")
READ_STATEMENT_RE = re.compile(r"(SELECT|WITH|SHOW|DESCRIBE|DESC|EXISTS|EXPLAIN)\b|\(", re.IGNORECASE)
AUTH_FAILED = 516  # ClickHouse's AUTHENTICATION_FAILED
READONLY = 164  # ClickHouse's READONLY
FORMAT_RE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
INSERT_FORMAT_RE = re.compile(rb"^\s*INSERT\s.*?\bFORMAT\s+([A-Za-z0-9_]+)[ \t]*(\r?\n|$)", re.IGNORECASE | re.DOTALL)
CODE_RE = re.compile(r"Code:\s*(\d+)")

QUERIES = Counter("perpline_ch_queries_total", "statements served", ["kind"])
REFUSED = Counter("perpline_ch_refused_total", "requests refused before running anything", ["reason"])
ERRORS = Counter("perpline_ch_errors_total", "statements that failed")
INSERTED = Counter("perpline_ch_inserted_rows_total", "rows inserted")


class ChError(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class Engine:
    """The chdb connection with full rights, a readonly session of the same data, and their one lock."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.conn: Any = chdb.connect(str(data_dir))
        self.reader: Any = chdb.connect(str(data_dir))
        self.reader.query("SET readonly = 1")  # sticky for the session; ClickHouse refuses to lower it again
        self.lock = threading.Lock()

    def query(self, sql: str, fmt: str, params: dict[str, str], readonly: bool = False) -> tuple[bytes, int]:
        with self.lock:
            try:
                result = (self.reader if readonly else self.conn).query(sql, fmt, params=params or None)
            except Exception as exc:  # noqa: BLE001 (chdb raises its own error types)
                raise _as_error(exc) from exc
        return bytes(result.bytes() or b""), _count(getattr(result, "rows_written", 0))

    def insert(self, head: str, fmt: str, data: bytes) -> int:
        with self.lock:
            try:
                with self.conn.send_insert(head, fmt) as inserter:
                    for start in range(0, len(data), CHUNK_BYTES):
                        inserter.append(data[start:start + CHUNK_BYTES])
                    summary = inserter.finish()
            except Exception as exc:  # noqa: BLE001
                raise _as_error(exc) from exc
        return _count(getattr(summary, "rows_written", 0)) if summary is not None else 0

    def close(self) -> None:
        with self.lock:
            self.reader.close()
            self.conn.close()


def _count(value: Any) -> int:
    value = value() if callable(value) else value
    return int(value or 0)


def _as_error(exc: Exception) -> ChError:
    text = str(exc)
    found = CODE_RE.search(text)
    return ChError(int(found.group(1)) if found else 1000, text)


def _decompress(data: bytes, encoding: str) -> bytes:
    encoding = encoding.lower().strip()
    if encoding in ("", "identity"):
        return data
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "deflate":
        return zlib.decompress(data)
    if encoding == "lz4":
        return _lz4_frames(data)
    if encoding == "zstd":
        import zstandard  # noqa: PLC0415

        return zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(data)
    if encoding == "br":
        import brotli  # type: ignore[import-not-found]  # noqa: PLC0415

        return bytes(brotli.decompress(data))
    raise ChError(1001, f"unsupported Content-Encoding {encoding}")


def _lz4_frames(data: bytes) -> bytes:
    """Every frame of the body: a client sends a large insert as one compressed frame per block, and
    a decoder that stops after the first keeps only the first block (rows lost without an error)."""
    import lz4.frame  # noqa: PLC0415

    out, rest = [], data
    while rest:
        decoder = lz4.frame.LZ4FrameDecompressor()
        out.append(decoder.decompress(rest))
        if not decoder.eof:
            raise ChError(1001, "truncated lz4 frame in the request body")
        rest = decoder.unused_data
    return b"".join(out)


def _sql_value(value: str) -> str:
    if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _with_settings(sql: str, settings: dict[str, str]) -> str:
    """Add a SETTINGS clause to SELECT/WITH/INSERT (before a trailing FORMAT)."""
    upper = sql.lstrip().upper()
    if not settings or not upper.startswith(("SELECT", "WITH", "INSERT")):
        return sql
    if upper.startswith("INSERT") and re.search(r"\b(VALUES|SELECT)\b", upper):
        return sql  # INSERT ... VALUES / SELECT: ClickHouse wants SETTINGS elsewhere; none are needed there
    clause = " SETTINGS " + ", ".join(f"{k} = {_sql_value(v)}" for k, v in settings.items())
    found = FORMAT_RE.search(sql)
    if found:
        return sql[:found.start()].rstrip().rstrip(";") + clause + " " + sql[found.start():]
    return sql.rstrip().rstrip(";") + clause


def _credentials(headers: Any, params: dict[str, str]) -> tuple[str, str]:
    """(user, password) as a ClickHouse server reads them: basic auth, X-ClickHouse-User/Key headers,
    or user=/password= URL parameters; none at all is user `default` with an empty password."""
    auth = headers.get("Authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            user, _, password = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        return user, password
    if headers.get("X-ClickHouse-User") is not None:
        return headers.get("X-ClickHouse-User", ""), headers.get("X-ClickHouse-Key", "")
    return params.get("user", ADMIN_USER), params.get("password", "")


def authenticate(passwords: dict[str, str], user: str, password: str) -> bool:
    """True when the user exists and the password matches (constant time; an empty password never does)."""
    expected = passwords.get(user)
    if not expected:
        return False
    return hmac.compare_digest(password.encode(), expected.encode())


def reader_refusal(sql: str) -> str | None:
    """Why the read-only user may not run this statement, or None. Conservative on purpose: one
    statement that starts as a read (comments first or a `;` anywhere are refused even when
    harmless); the readonly session is the real guard, this only answers early and clearly."""
    if ";" in sql.strip().rstrip(";"):
        return "more than one statement"
    if not READ_STATEMENT_RE.match(sql.lstrip()):
        return "not a read statement (SELECT, WITH, SHOW, DESCRIBE, EXISTS, EXPLAIN)"
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "perpline-chdb/0.1"
    engine: Engine
    passwords: dict[str, str] = {}  # user -> password (perpline.ch.users); set by serve()

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        return

    # --- HTTP verbs --------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if path in ("/", "/ping") and "query=" not in self.path:
            self._reply(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
        elif path == "/metrics":
            self._reply(200, generate_latest(), {"Content-Type": CONTENT_TYPE_LATEST})
        else:
            self._serve(b"")

    def do_POST(self) -> None:  # noqa: N802
        user = self._user()
        if user is None:
            return
        try:
            body = self._read_body()
        except ChError as err:
            self._error(err)
            return
        self._serve(body, user)

    def _user(self) -> str | None:
        """The authenticated user, or None after answering 401 (and closing: the body stays unread)."""
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        user, password = _credentials(self.headers, params)
        if authenticate(self.passwords, user, password):
            return user
        REFUSED.labels("authentication").inc()
        log.warning("authentication failed", extra={"user": user[:64], "client": self.client_address[0]})
        self.close_connection = True
        text = (f"Code: {AUTH_FAILED}. DB::Exception: {user[:64]}: Authentication failed: password is incorrect, "
                "or there is no user with such name. The embedded ClickHouse's passwords are in "
                f"<data dir>/{USERS_DIR_NAME}/; use the URL `perpline up` prints. (AUTHENTICATION_FAILED)\n")
        self._reply(401, text.encode(), {"X-ClickHouse-Exception-Code": str(AUTH_FAILED), "Connection": "close",
                                         "WWW-Authenticate": 'Basic realm="ClickHouse"',
                                         "Content-Type": "text/plain; charset=UTF-8"})
        return None

    # --- request handling ----------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = self._read_chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                raise ChError(1002, f"request body over {MAX_BODY_BYTES} bytes")
            data = self.rfile.read(length) if length else b""
        return _decompress(data, self.headers.get("Content-Encoding", ""))

    def _read_chunked(self) -> bytes:
        parts, total = [], 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                raise ChError(1002, f"request body over {MAX_BODY_BYTES} bytes")
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _serve(self, body: bytes, user: str | None = None) -> None:
        user = user or self._user()
        if user is None:
            return
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        query_params = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        settings = {k: v for k, v in params.items()
                    if k not in TRANSPORT_PARAMS and not k.startswith(("param_", "http_"))}
        try:
            self._execute(params.get("query", ""), body, query_params, settings, params.get("default_format"),
                          readonly=user != ADMIN_USER)
        except ChError as err:
            self._error(err)

    def _execute(self, url_sql: str, body: bytes, qparams: dict[str, str], settings: dict[str, str],
                 default_format: str | None, readonly: bool) -> None:
        insert = self._split_insert(url_sql, body)
        if readonly:
            sql_text = url_sql or body[:65536].decode(errors="replace")
            why = "an insert" if insert is not None else reader_refusal(sql_text)
            if why is not None:
                REFUSED.labels("readonly").inc()
                raise ChError(READONLY, f"Code: {READONLY}. DB::Exception: {READER_USER}: Cannot execute query in "
                                        f"readonly mode: {why}. (READONLY)")
        if insert is not None:
            head, fmt, data = insert
            QUERIES.labels("insert").inc()
            rows = self.engine.insert(_with_settings(head, settings), fmt, data)
            INSERTED.inc(rows)
            self._reply(200, b"", {"X-ClickHouse-Summary": _summary(rows)})
            return
        sql = (url_sql + ("\n" + body.decode() if body else "")).strip() if url_sql else body.decode().strip()
        returns_rows = sql.lstrip().upper().startswith(ROW_STATEMENTS)
        fmt_match = FORMAT_RE.search(sql)
        fmt = fmt_match.group(1) if fmt_match else (default_format or "TabSeparated")
        QUERIES.labels("select" if returns_rows else "command").inc()
        data, written = self.engine.query(_with_settings(sql, settings), fmt, qparams, readonly=readonly)
        headers = {"X-ClickHouse-Summary": _summary(written), "Content-Type": "application/octet-stream"}
        if returns_rows:
            headers["X-ClickHouse-Format"] = fmt
        self._reply(200, data, headers)

    @staticmethod
    def _split_insert(url_sql: str, body: bytes) -> tuple[str, str, bytes] | None:
        """(INSERT head without FORMAT, format, data) when the request is a formatted insert."""
        if url_sql:
            found = INSERT_FORMAT_RE.match(url_sql.encode())
            return (url_sql[:_format_pos(url_sql)], found.group(1).decode(), body) if found else None
        found = INSERT_FORMAT_RE.match(body[:65536])
        if not found:
            return None
        head = body[:found.end()].decode()
        return head[:_format_pos(head)], found.group(1).decode(), body[found.end():]

    def _error(self, err: ChError) -> None:
        ERRORS.inc()
        log.info("statement failed", extra={"code": err.code, "error": err.text[:300]})
        self._reply(500, err.text.encode() + b"\n", {"X-ClickHouse-Exception-Code": str(err.code),
                                                     "Content-Type": "text/plain; charset=UTF-8"})

    def _reply(self, status: int, data: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("X-ClickHouse-Timezone", "UTC")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _format_pos(sql: str) -> int:
    found = re.search(r"\bFORMAT\s+[A-Za-z0-9_]+", sql, re.IGNORECASE)
    assert found is not None
    return found.start()


def _summary(written_rows: int) -> str:
    return json.dumps({"read_rows": "0", "read_bytes": "0", "written_rows": str(written_rows), "written_bytes": "0",
                       "total_rows_to_read": "0", "result_rows": "0", "result_bytes": "0"})


def serve(data_dir: Path, host: str, port: int, users_dir: Path) -> None:
    os.environ["TZ"] = "UTC"
    time.tzset()
    Handler.passwords = ensure_passwords(users_dir)
    Handler.engine = Engine(data_dir)
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    stopping: list[int] = []  # set by the handlers: no lock in a signal handler (Event.set can deadlock)
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum))
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    log.info("clickhouse ready", extra={"url": f"http://{host}:{port}", "data_dir": str(data_dir)})
    while not stopping:
        time.sleep(0.2)
    server.shutdown()
    Handler.engine.close()
    log.info("clickhouse stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="perpline clickhouse")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("PERPLINE_CH_DATA_DIR", ".perpline/clickhouse")))
    parser.add_argument("--host", default=os.environ.get("PERPLINE_CH_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PERPLINE_CH_PORT", "18123")))
    parser.add_argument("--users-dir", type=Path, default=None,
                        help=f"the users' password files (generated when missing); default: {USERS_DIR_NAME}/ "
                             "next to the data dir")
    args = parser.parse_args(argv)
    setup_logging("clickhouse")
    data_dir = args.data_dir.resolve()
    serve(data_dir, args.host, args.port, (args.users_dir or data_dir.parent / USERS_DIR_NAME).resolve())


if __name__ == "__main__":
    main()
