"""PERPLINE_MAX_PARTITIONS caps every topic's partitions but those whose partitions have roles, and the
embedded stack sets it to one partition per matcher shard (an external broker keeps topics.yaml's)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from perpline.contracts import topics
from perpline.stack import up

YAML = Path(topics.__file__).resolve().parents[2] / "redpanda" / "topics.yaml"


def test_the_cap_lowers_every_topic_but_the_fixed_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(topics.MAX_PARTITIONS_ENV, raising=False)
    full = topics.specs()
    assert full[topics.ACCOUNT_COMMANDS].partitions == 4 and full[topics.API_CHECKPOINTS].partitions == 2
    monkeypatch.setenv(topics.MAX_PARTITIONS_ENV, "1")
    capped = topics.specs()
    assert capped[topics.API_CHECKPOINTS].partitions == 2  # partition 0 manifests, 1 chunks
    for name, spec in capped.items():
        if name != topics.API_CHECKPOINTS:
            assert spec.partitions == 1, name
        assert (spec.key, spec.configs, spec.replication_factor) == (full[name].key, full[name].configs,
                                                                       full[name].replication_factor)
    monkeypatch.setenv(topics.MAX_PARTITIONS_ENV, "2")
    assert topics.spec(topics.ACCOUNT_COMMANDS).partitions == 2 and topics.spec(topics.ORDERS).partitions == 2


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_cap_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(topics.MAX_PARTITIONS_ENV, value)
    with pytest.raises(topics.TopicsFileError, match=topics.MAX_PARTITIONS_ENV):
        topics.specs()


def test_fixed_partitions_must_be_a_boolean(tmp_path: Path) -> None:
    text = YAML.read_text().replace("fixed_partitions: true", "fixed_partitions: yes-please")
    (tmp_path / "topics.yaml").write_text(text)
    with pytest.raises(topics.TopicsFileError, match="fixed_partitions"):
        topics.load(tmp_path / "topics.yaml")


def _plan(tmp_path: Path, shards: int) -> up.Plan:
    return up.make_plan(argparse.Namespace(demo=False, data_dir=str(tmp_path), api_host=None, api_port=None,
                                           free_ports=True, kafka_port=None, clickhouse_port=None,
                                           matcher_shards=shards))


@pytest.mark.parametrize("shards", [1, 2])
def test_the_embedded_stack_runs_one_partition_per_matcher_shard(
        shards: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PERPLINE_KAFKA_BOOTSTRAP", "PERPLINE_CLICKHOUSE_URL", topics.MAX_PARTITIONS_ENV):
        monkeypatch.delenv(name, raising=False)
    plan = _plan(tmp_path, shards)
    up.prepare(plan)
    for spec in up.components(plan):
        assert spec.env[topics.MAX_PARTITIONS_ENV] == str(shards), spec.name
    monkeypatch.setenv(topics.MAX_PARTITIONS_ENV, "4")  # the operator's choice wins
    assert all(spec.env[topics.MAX_PARTITIONS_ENV] == "4" for spec in up.components(plan))


def test_a_stack_on_an_external_broker_keeps_the_topics_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(topics.MAX_PARTITIONS_ENV, raising=False)
    monkeypatch.setenv("PERPLINE_KAFKA_BOOTSTRAP", "redpanda:9092")
    plan = _plan(tmp_path, 1)
    plan.ch_passwords = {"default": "a", "auditor": "b"}
    assert all(topics.MAX_PARTITIONS_ENV not in spec.env for spec in up.components(plan))
