"""perpline.pipelines.gaps.HoleReader on the real broker: a hole made of transaction markers and aborted
records holds no data (passed over); records the consumer did not get are data (re-read)."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from conftest_broker import running_broker

from perpline.pipelines.gaps import HoleReader

pytestmark = pytest.mark.integration


def test_markers_and_aborted_records_are_no_data_but_records_are() -> None:
    with running_broker() as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("holes", 1, 1)])["holes"].result(10)
        txn = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "hole-test"})
        txn.init_transactions(10)
        txn.begin_transaction()
        txn.produce("holes", b"committed")  # offset 0, its marker at 1
        txn.commit_transaction(10)
        txn.begin_transaction()
        txn.produce("holes", b"aborted")  # offset 2, its marker at 3
        txn.abort_transaction(10)
        plain, offsets = Producer({"bootstrap.servers": broker.bootstrap}), []
        for n in range(3):
            plain.produce("holes", f"plain-{n}".encode(), on_delivery=lambda _err, msg: offsets.append(msg.offset()))
        plain.flush(10)
        first = offsets[0]  # after the commit's marker and whatever the abort left (the embedded broker: nothing)
        assert first >= 2 and offsets == [first, first + 1, first + 2]
        reader = HoleReader(broker.bootstrap)
        assert reader("holes", 0, 1, first) is False  # markers and aborted records only: nothing to re-read
        assert reader("holes", 0, 1, first + 1) is True  # `first` is a record the consumer would have skipped
        assert reader("holes", 0, first + 1, first + 2) is True
        assert reader("holes", 0, first + 3, first + 5) is False  # past the end: nothing there
