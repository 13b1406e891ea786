"""The embedded ClickHouse HTTP interface, proved with clickhouse-connect's own operations."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from perpline.ch.client import get_client, wait_ready
from perpline.ch.migrate import MIGRATIONS_DIR, apply_migrations
from perpline.ch.users import (
    ADMIN_USER,
    READER_USER,
    USERS_DIR_NAME,
    ensure_passwords,
    read_password,
    with_credentials,
)
from perpline.stack.supervisor import free_port

pytestmark = pytest.mark.integration


class Server:
    def __init__(self, tmp: Path) -> None:
        self.data_dir, self.users_dir = tmp / "ch", tmp / USERS_DIR_NAME
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "perpline.ch.server", "--data-dir", str(self.data_dir),
                                      "--users-dir", str(self.users_dir), "--port", str(self.port)],
                                     stderr=subprocess.DEVNULL)
        wait_ready(self.base, 60)

    def password(self, user: str) -> str:
        return read_password(self.users_dir, user)

    @property
    def url(self) -> str:
        """The admin's URL (user `default`, full rights)."""
        return with_credentials(self.base, ADMIN_USER, self.password(ADMIN_USER))

    @property
    def reader_url(self) -> str:
        return with_credentials(self.base, READER_USER, self.password(READER_USER))

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("ch"))
    srv.start()
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop()


@pytest.fixture(params=[True, False], ids=["compressed", "plain"])
def client(server: Server, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return get_client(server.url, compress=request.param)


def test_ddl_rows_and_exact_decimals(client) -> None:  # type: ignore[no-untyped-def]
    client.command("DROP TABLE IF EXISTS money")
    client.command("CREATE TABLE money (id UInt64, amount Decimal(38, 8), who String) ENGINE = MergeTree ORDER BY id")
    rows = [[1, Decimal("0.00000001"), "a"], [2, Decimal("-12345678901234567890.12345678"), "b"]]
    client.insert("money", rows, column_names=["id", "amount", "who"])
    got = client.query("SELECT id, amount, who FROM money ORDER BY id").result_rows
    assert [list(r) for r in got] == rows
    assert client.query("SELECT sum(amount) FROM money").result_rows[0][0] == Decimal("-12345678901234567890.12345677")


def test_an_insert_of_many_blocks_keeps_every_row(client) -> None:  # type: ignore[no-untyped-def]
    """clickhouse-connect sends a large insert as several blocks, each its own compressed frame: every
    frame must be read (a server that decoded only the first kept the first block of a batch, silently)."""
    client.command("DROP TABLE IF EXISTS many")
    client.command("CREATE TABLE many (id UInt64, amount Decimal(38, 8), who String) ENGINE = MergeTree ORDER BY id")
    rows = [[n, Decimal(n) / 100, f"account-{n}-" + "x" * 40] for n in range(300_000)]
    client.insert("many", rows, column_names=["id", "amount", "who"])
    assert client.query("SELECT count(), sum(id) FROM many").result_rows[0] == (300_000, sum(range(300_000)))


def test_frames_arrow_and_polars(client) -> None:  # type: ignore[no-untyped-def]
    client.command("DROP TABLE IF EXISTS frames")
    client.command("CREATE TABLE frames (n UInt32, s String) ENGINE = MergeTree ORDER BY n")
    client.insert_arrow("frames", pa.table({"n": pa.array([1, 2], pa.uint32()), "s": ["x", "y"]}))
    client.insert_df("frames", pd.DataFrame({"n": pd.Series([3], dtype="uint32"), "s": ["z"]}))
    df = client.query_df("SELECT n, s FROM frames ORDER BY n")
    assert df["s"].tolist() == ["x", "y", "z"]
    table = client.query_arrow("SELECT n, s FROM frames ORDER BY n")
    assert pl.from_arrow(table)["n"].to_list() == [1, 2, 3]


def test_parameters_server_and_client_side(client) -> None:  # type: ignore[no-untyped-def]
    assert client.query("SELECT {x:UInt32} + 1", parameters={"x": 41}).result_rows == [(42,)]
    assert client.query("SELECT %(s)s || '!'", parameters={"s": "it's"}).result_rows == [("it's!",)]


def test_errors_carry_the_engine_message(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DatabaseError) as err:
        client.query("SELEC 1")
    assert "Syntax error" in str(err.value)
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE|doesn't exist|does not exist"):
        client.query("SELECT * FROM no_such_table")


def test_replacing_merge_tree_and_dedup_token(client) -> None:  # type: ignore[no-untyped-def]
    client.command("DROP TABLE IF EXISTS rmt")
    client.command("CREATE TABLE rmt (id String, v Int64) ENGINE = ReplacingMergeTree ORDER BY id")
    for _ in range(2):
        client.insert("rmt", [["j1", 5], ["j2", 7]], column_names=["id", "v"])
    assert client.query("SELECT count(), sum(v) FROM rmt FINAL").result_rows == [(2, 12)]
    client.command("DROP TABLE IF EXISTS dedup")
    client.command("CREATE TABLE dedup (v Int64) ENGINE = MergeTree ORDER BY v "
                   "SETTINGS non_replicated_deduplication_window = 100")
    for _ in range(2):
        client.insert("dedup", [[1], [2]], column_names=["v"], settings={"insert_deduplication_token": "batch-1"})
    assert client.query("SELECT count() FROM dedup").result_rows == [(2,)]


def test_concurrent_clients(server: Server) -> None:
    setup = get_client(server.url)
    setup.command("DROP TABLE IF EXISTS conc")
    setup.command("CREATE TABLE conc (t UInt8, i UInt32) ENGINE = MergeTree ORDER BY (t, i)")
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            c = get_client(server.url)
            for i in range(20):
                c.insert("conc", [[t, i]], column_names=["t", "i"])
                assert c.query("SELECT count() FROM conc WHERE t = {t:UInt8}", parameters={"t": t}).result_rows[0][0] == i + 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[0]
    assert setup.query("SELECT count() FROM conc").result_rows == [(160,)]


def test_migrations_idempotent_and_data_survives_restart(server: Server) -> None:
    c = get_client(server.url)
    first = apply_migrations(c)
    assert apply_migrations(c) == []
    assert "ledger_postings" in {r[0] for r in c.query("SHOW TABLES").result_rows}
    c.insert("ledger_postings", [["j", 0, "DEPOSIT", "r", 1, "", "user:1:SPOT", "USDT", Decimal("-1.5"), "t", "c", 1, 0, 0]],
             column_names=["journal_id", "posting_index", "ref_type", "ref_id", "account_id", "symbol", "ledger_account",
                           "asset", "amount", "trace_id", "causation_id", "ts_ms", "source_partition", "source_offset"])
    server.stop()
    server.start()
    again = get_client(server.url)
    assert again.query("SELECT amount FROM ledger_postings FINAL").result_rows == [(Decimal("-1.5"),)]
    assert apply_migrations(again) == [] and first in ([], sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql")))


def test_ping_and_metrics(server: Server) -> None:
    assert httpx.get(server.base + "/ping").text == "Ok.\n"  # no user needed: nothing runs
    metrics = httpx.get(server.base + "/metrics").text
    assert "perpline_ch_queries_total" in metrics


# --- users: every statement needs a password; the auditor only reads -----------------------------------------

def _post(url: str, sql: str, **kw: Any) -> httpx.Response:
    return httpx.post(url, content=sql.encode(), timeout=30, **kw)


def test_no_or_wrong_credentials_are_refused_and_nothing_runs(server: Server) -> None:
    admin = get_client(server.url)
    admin.command("DROP TABLE IF EXISTS intruder")
    create = "CREATE TABLE intruder (a UInt8) ENGINE = MergeTree ORDER BY a"
    attempts = [
        _post(server.base, create),  # no credentials: user default, empty password
        _post(server.base, create, auth=(ADMIN_USER, "wrong")),
        _post(server.base, create, auth=(READER_USER, server.password(ADMIN_USER))),  # another user's password
        _post(server.base, create, auth=("nobody", server.password(ADMIN_USER))),
        _post(server.base, create, headers={"X-ClickHouse-User": ADMIN_USER, "X-ClickHouse-Key": ""}),
        _post(server.base + "/?user=default&password=guess", create),
        httpx.get(server.base + "/", params={"query": create}, timeout=30),
        _post(server.base, create, headers={"Authorization": "Basic !!not-base64!!"}),
    ]
    assert [(r.status_code, r.headers.get("X-ClickHouse-Exception-Code")) for r in attempts] == [(401, "516")] * 8
    assert "AUTHENTICATION_FAILED" in attempts[0].text
    assert admin.query("EXISTS TABLE intruder").result_rows == [(0,)]
    with pytest.raises(DatabaseError, match="516"):
        get_client(server.base)  # clickhouse-connect without a password cannot even connect


def test_the_admin_authenticates_as_clickhouse_clients_do(server: Server) -> None:
    password = server.password(ADMIN_USER)
    basic = _post(server.base, "SELECT 1", auth=(ADMIN_USER, password))
    headers = _post(server.base, "SELECT 2", headers={"X-ClickHouse-User": ADMIN_USER, "X-ClickHouse-Key": password})
    params = httpx.get(server.base + "/", params={"query": "SELECT 3", "user": ADMIN_USER, "password": password})
    assert [(r.status_code, r.text) for r in (basic, headers, params)] == [(200, "1\n"), (200, "2\n"), (200, "3\n")]


REFUSED_TO_THE_AUDITOR = [
    "INSERT INTO books VALUES (99, 'x')",
    "INSERT INTO books SELECT 98, 'y'",
    "DROP TABLE books",
    "TRUNCATE TABLE books",
    "ALTER TABLE books DELETE WHERE 1 SETTINGS mutations_sync = 1",
    "ALTER TABLE books ADD COLUMN z UInt8",
    "CREATE TABLE books2 (a UInt8) ENGINE = Memory",
    "RENAME TABLE books TO books3",
    "OPTIMIZE TABLE books FINAL",
    "SYSTEM STOP MERGES books",
    "SET readonly = 0",
    "KILL QUERY WHERE 1",
    "SELECT 1; DROP TABLE books",
    "SELECT count() FROM books; TRUNCATE TABLE books",
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "WITH 1 AS x SELECT x FROM url('http://127.0.0.1:1/', 'CSV', 'a UInt8')",
    "INSERT INTO FUNCTION file('/tmp/perpline-auditor-was-here.csv', 'CSV', 'a UInt8') SELECT 1",
    "/* a comment first */ DROP TABLE books",
]


def test_the_auditor_reads_and_nothing_else(server: Server) -> None:
    admin = get_client(server.url)
    admin.command("DROP TABLE IF EXISTS books")
    admin.command("DROP TABLE IF EXISTS books2")
    admin.command("CREATE TABLE books (id UInt32, who String) ENGINE = MergeTree ORDER BY id")
    admin.insert("books", [[1, "a"], [2, "b"]], column_names=["id", "who"])
    auditor = get_client(server.reader_url)
    assert auditor.query("SELECT sum(id) FROM books WHERE who != {w:String}", parameters={"w": "z"}).result_rows == [(3,)]
    assert auditor.query_df("SELECT id, who FROM books ORDER BY id")["who"].tolist() == ["a", "b"]
    assert "books" in {r[0] for r in auditor.query("SHOW TABLES").result_rows}
    assert auditor.query("DESCRIBE TABLE books").result_rows[0][0] == "id"
    refused = []
    for sql in REFUSED_TO_THE_AUDITOR:
        with pytest.raises(DatabaseError) as err:
            auditor.command(sql)
        refused.append("164" in str(err.value) and "READONLY" in str(err.value))
    with pytest.raises(DatabaseError, match="164"):
        auditor.insert("books", [[3, "c"]], column_names=["id", "who"])
    assert all(refused), [sql for sql, ok in zip(REFUSED_TO_THE_AUDITOR, refused, strict=True) if not ok]
    assert admin.query("SELECT id, who FROM books ORDER BY id").result_rows == [(1, "a"), (2, "b")]
    assert [r[0] for r in admin.query("DESCRIBE TABLE books").result_rows] == ["id", "who"]
    assert admin.query("EXISTS TABLE books2").result_rows == [(0,)]
    assert not Path("/tmp/perpline-auditor-was-here.csv").exists()
    admin.command("INSERT INTO books VALUES (3, 'c')")  # the admin's session is still writable
    assert auditor.query("SELECT count() FROM books").result_rows == [(3,)]


def test_passwords_are_private_files_generated_once(server: Server) -> None:
    first = {user: server.password(user) for user in (ADMIN_USER, READER_USER)}
    assert len(set(first.values())) == 2 and all(len(p) >= 32 for p in first.values())
    for user in (ADMIN_USER, READER_USER):
        assert (server.users_dir / f"{user}.password").stat().st_mode & 0o777 == 0o600
    assert ensure_passwords(server.users_dir) == first
