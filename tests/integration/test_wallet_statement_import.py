"""The reconciler's import of the wallet's statement (perpline.wallet.StatementImport) on the real broker:
a pull whose ClickHouse insert fails leaves those lines to the next pull, which stores them all."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Producer
from conftest_broker import running_broker

from perpline import wallet
from perpline.config import topic_map
from perpline.contracts import codec

pytestmark = pytest.mark.integration


class Table:
    """A ClickHouse client stand-in: keeps inserted rows, or fails while `down`."""

    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self.down = False

    def insert(self, table: str, rows: list[list[Any]], column_names: list[str]) -> None:
        assert table == "wallet_statement" and column_names == wallet.COLUMNS
        if self.down:
            raise ConnectionError("ClickHouse killed")
        self.rows.extend(rows)


def lines(producer: Producer, first: int, count: int) -> None:
    for n in range(first, first + count):
        line = wallet.movement(wallet.DEPOSIT, 7, "USDT", "10", f"r{n}", 1)
        producer.produce(topic_map()[wallet.TOPIC], key=b"7", value=codec.encode(line))
    producer.flush(10)


def test_lines_read_by_a_failed_pull_are_imported_by_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_broker() as broker:
        monkeypatch.setenv("PERPLINE_KAFKA_BOOTSTRAP", broker.bootstrap)
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        importer, table = wallet.StatementImport(broker.bootstrap), Table()
        try:
            lines(producer, 0, 3)
            assert importer.pull(table) == 3
            assert importer.consumer.assignment() == []  # between pulls it fetches nothing
            lines(producer, 3, 4)
            table.down = True
            with pytest.raises(ConnectionError):
                importer.pull(table)  # read r3..r6, stored nothing, committed nothing
            table.down = False
            lines(producer, 7, 1)
            importer.pull(table)
            assert importer.consumer.assignment() == []
            assert sorted(int(r[COLUMN_REQUEST][1:]) for r in table.rows) == list(range(8))
        finally:
            importer.close()


COLUMN_REQUEST = wallet.COLUMNS.index("request_id")
