"""Matcher shards without a broker: which `orders` partitions a shard owns, how the shard is found (flags,
environment, StatefulSet ordinal), and the refusals: more shards than partitions, a data dir or snapshot
written by another shard layout, an input from a partition the shard does not own."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from perpline.ch.users import ADMIN_USER, READER_USER
from perpline.config import topic_map
from perpline.contracts import codec
from perpline.contracts import messages as m
from perpline.contracts.codes import Code
from perpline.matcher import shards, snapshot
from perpline.matcher.runner import Matcher, wal_record
from perpline.matcher.shards import Shard, ShardError
from perpline.stack import up

META = {"trace_id": "t", "causation_id": "c", "ts_ms": 1}


def order(order_id: int, symbol: str = "BTCUSDT-PERP") -> bytes:
    return codec.encode(m.NewOrder(**META, order_id=order_id, account_id=1, symbol=symbol, side="BUY",
                                   order_type="LIMIT", time_in_force="GTC", price="50000", quantity="0.010",
                                   client_order_id=f"c{order_id}"))


def test_each_partition_is_owned_by_exactly_one_shard() -> None:
    for count in (1, 2, 3, 4):
        owners = {p: [i for i in range(count) if Shard(i, count).owns(p)] for p in range(8)}
        assert all(len(found) == 1 and found[0] == p % count for p, found in owners.items())
    assert Shard(0, 2).partitions(range(4)) == [0, 2] and Shard(1, 2).partitions([3, 1, 0, 2]) == [1, 3]
    assert Shard(0, 1).partitions(range(2)) == [0, 1]


def test_the_shard_comes_from_flags_then_environment_then_the_pod_ordinal() -> None:
    assert shards.resolve(1, 2, {}) == Shard(1, 2)
    assert shards.resolve(None, None, {}) == Shard(0, 1)
    assert shards.resolve(None, None, {"PERPLINE_MATCHER_SHARDS": "2", "PERPLINE_MATCHER_SHARD": "1"}) == Shard(1, 2)
    assert shards.resolve(None, None, {"PERPLINE_MATCHER_SHARDS": "2", "PERPLINE_INSTANCE_ID": "matcher-1"}) == Shard(1, 2)
    assert shards.resolve(0, None, {"PERPLINE_MATCHER_SHARDS": "2", "PERPLINE_INSTANCE_ID": "matcher-1"}) == Shard(0, 2)
    assert shards.ordinal("matcher-12") == 12 and shards.ordinal("matcher") is None
    for flag, count, env in ((None, 2, {"PERPLINE_INSTANCE_ID": "matcher"}), (2, 2, {}), (0, 0, {}),
                             (None, None, {"PERPLINE_MATCHER_SHARDS": "two"})):
        with pytest.raises(ShardError) as refused:
            shards.resolve(flag, count, env)
        assert refused.value.code == Code.MATCHER_SHARD_INVALID


def test_more_shards_than_orders_partitions_are_refused(tmp_path: Path) -> None:
    assert shards.orders_partitions() == 2
    with pytest.raises(ShardError, match="at most 2 shards"):
        shards.claim(tmp_path, Shard(2, 3), 2)
    args = argparse.Namespace(demo=False, data_dir=str(tmp_path), api_host=None, api_port=None, free_ports=True,
                              kafka_port=None, clickhouse_port=None, matcher_shards=3)
    with pytest.raises(ShardError, match="at most 2 shards"):
        up.make_plan(args)
    assert not list(tmp_path.iterdir())  # nothing written by a refusal


def test_up_starts_one_matcher_per_shard_and_keeps_the_name_matcher_for_one(tmp_path: Path) -> None:
    args = argparse.Namespace(demo=False, data_dir=str(tmp_path), api_host=None, api_port=None, free_ports=True,
                              kafka_port=None, clickhouse_port=None, matcher_shards=2)
    plan = up.make_plan(args)
    plan.ch_passwords = {ADMIN_USER: "a", READER_USER: "r"}
    specs = {s.name: s for s in up.components(plan)}
    assert [n for n in specs if n.startswith("matcher")] == ["matcher-0", "matcher-1"]
    assert specs["matcher-1"].argv[-4:] == ["--shard", "1", "--shards", "2"]
    assert set(specs["api"].after) == {"broker", "clickhouse"}  # it starts beside the matchers, not after them
    plan.matcher_shards = 1
    assert [s.name for s in up.components(plan) if s.name.startswith("matcher")] == ["matcher"]


def test_a_shard_records_its_identity_and_its_own_dir(tmp_path: Path) -> None:
    directory = shards.claim(tmp_path, Shard(1, 2), 2)
    assert directory == tmp_path / "shard-1"
    assert json.loads((directory / "shard.json").read_text()) == {"shard": 1, "shards": 2, "partitions": [1]}
    assert shards.claim(tmp_path, Shard(1, 2), 2) == directory  # a restart of the same shard
    assert shards.claim(tmp_path, Shard(0, 2), 2) == tmp_path / "shard-0"
    assert shards.claim(tmp_path / "single", Shard(0, 1), 2) == tmp_path / "single"  # one shard: today's layout


@pytest.mark.parametrize("first, then", [
    (Shard(0, 1), Shard(0, 2)),  # a single matcher's WAL under a sharded start
    (Shard(1, 2), Shard(0, 1)),  # shards' dirs under a single matcher's start
])
def test_a_data_dir_of_another_shard_layout_is_refused(tmp_path: Path, first: Shard, then: Shard) -> None:
    directory = shards.claim(tmp_path, first, 2)
    (directory / "wal").mkdir()
    with pytest.raises(ShardError) as refused:
        shards.claim(tmp_path, then, 2)
    assert refused.value.code == Code.MATCHER_SHARD_MISMATCH and "refusing to re-partition" in refused.value.msg


def test_a_shard_dir_recorded_with_other_partitions_or_another_count_is_refused(tmp_path: Path) -> None:
    shards.claim(tmp_path, Shard(1, 2), 2)
    with pytest.raises(ShardError, match=r"shard 1 of 2 \(partitions \[1\]\), this is shard 1 of 2 \(partitions \[1, 3\]"):
        shards.claim(tmp_path, Shard(1, 2), 4)  # `orders` grew: partition 3 would hold symbols of partition 1
    (tmp_path / "shard-2").mkdir()
    (tmp_path / "shard-2" / "shard.json").write_text(json.dumps({"shard": 2, "shards": 3, "partitions": []}))
    with pytest.raises(ShardError, match="shard-2 belongs to another shard layout"):
        shards.claim(tmp_path, Shard(0, 2), 2)


def test_the_snapshot_records_the_shard_and_another_shard_cannot_restore_it(tmp_path: Path) -> None:
    directory = shards.claim(tmp_path, Shard(0, 2), 2)
    first = Matcher(directory, "127.0.0.1:1", topic_map(), "never", Shard(0, 2))
    first.recover()
    first.wal.append_batch([wal_record(0, 0, order(1))])
    first._apply_record(wal_record(0, 0, order(1)))
    first.take_snapshot()
    first.wal.close()
    (snap,) = sorted((directory / "snapshots").glob("snapshot-*.bin"))
    header = json.loads(snapshot.read(snap).data.partition(b"\n")[0])
    assert {k: header[k] for k in ("shard", "shards", "partitions")} == {"shard": 0, "shards": 2, "partitions": [0]}
    again = Matcher(directory, "127.0.0.1:1", topic_map(), "never", Shard(0, 2))
    again.recover()
    again.wal.close()
    with pytest.raises(ShardError) as refused:
        Matcher(directory, "127.0.0.1:1", topic_map(), "never", Shard(1, 2)).recover()
    assert refused.value.code == Code.MATCHER_SHARD_MISMATCH


def test_an_input_from_a_partition_the_shard_does_not_own_is_refused_before_the_engine(tmp_path: Path) -> None:
    matcher = Matcher(tmp_path, "127.0.0.1:1", topic_map(), "never", Shard(1, 2))
    matcher.recover()
    with pytest.raises(ShardError) as refused:
        matcher._apply_record(wal_record(0, 5, order(1)))
    assert refused.value.code == Code.MATCHER_WRONG_PARTITION
    assert matcher.state.engines == {} and matcher.state.next_offsets == {}
    ((symbol, events),) = matcher._apply_record(wal_record(1, 5, order(2, "ETHUSDT-PERP")))
    assert symbol == "ETHUSDT-PERP" and matcher.state.next_offsets == {1: 6}


def test_a_shard_assigns_only_its_partitions_and_refuses_a_broker_with_other_partitions(tmp_path: Path) -> None:
    assert Matcher(tmp_path, "127.0.0.1:1", topic_map(), "never", Shard(1, 2))._owned([0, 1]) == [1]
    assert Matcher(tmp_path, "127.0.0.1:1", topic_map(), "never")._owned([0, 1, 2]) == [0, 1, 2]  # one shard: all
    with pytest.raises(ShardError, match="cannot know which symbols are its own"):
        Matcher(tmp_path, "127.0.0.1:1", topic_map(), "never", Shard(0, 2))._owned([0, 1, 2, 3])
