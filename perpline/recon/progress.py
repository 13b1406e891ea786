"""How far the stages between the matcher and ClickHouse are, from the broker (perpline.recon.confirm).

A mark is the end of every partition of the chain's topics. A stage has drained a mark when its
group's committed offset reached it, or when nothing but transaction markers lies between the two:
the embedded broker writes a control record after each transaction, so a processor that consumed
everything commits one below the end. That is checked by reading from the committed offset
(read_committed): no data record before the mark's end means drained.
"""

from __future__ import annotations

import logging
import uuid

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from perpline.config import kafka_config, settings
from perpline.contracts import topics
from perpline.topics_tool import first_data_offsets, watermarks

log = logging.getLogger("perpline.recon")
# (consumer group, the topics it reads) of every stage a rule's data goes through
# (the matcher has no group: it publishes each event and its settlement legs together, confirm.CHAIN_DEPTH)
CHAIN = (("perpline-accounts", (topics.ACCOUNT_COMMANDS,)),
         ("perpline-ledger-sink", (topics.LEDGER_ENTRIES, topics.ACCOUNT_EVENTS, topics.MATCHER_EVENTS)))
TIMEOUT_S = 5.0
PROBE_S = 2.0  # how long a read from a committed offset may take to reach a record or the end

Mark = dict[tuple[str, int], int]


class BrokerProgress:
    def __init__(self, bootstrap: str) -> None:
        prefix = settings().topic_prefix
        self.chain = [(f"{prefix}{group}", [topics.physical(t) for t in names]) for group, names in CHAIN]
        self.admin = AdminClient(kafka_config(bootstrap, **{"socket.timeout.ms": int(TIMEOUT_S * 1000)}))
        self.consumer = Consumer(kafka_config(bootstrap, **{
            "group.id": f"perpline-recon-probe-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
            "isolation.level": "read_committed", "enable.partition.eof": True, "fetch.wait.max.ms": 10}))
        self._warned = False

    def mark(self) -> Mark | None:
        try:
            names = sorted({t for _, group_topics in self.chain for t in group_topics})
            meta = self.consumer.list_topics(timeout=TIMEOUT_S).topics
            parts = [TopicPartition(t, p) for t in names if t in meta for p in sorted(meta[t].partitions)]
            return {key: high for key, (_, high) in watermarks(self.consumer, parts).items()}
        except Exception as exc:  # noqa: BLE001 (broker away: no mark this pass, nothing confirmed from it)
            self._warn(exc)
            return None

    def drained(self, mark: Mark) -> bool:
        try:
            behind: dict[tuple[str, int], int] = {}
            for group, group_topics in self.chain:
                committed = self._committed(group)
                for (topic, partition), end in mark.items():
                    at = committed.get((topic, partition), 0)
                    if topic in group_topics and at < end:
                        behind[(topic, partition)] = min(at, behind.get((topic, partition), at))
            return all(offset >= mark[key] for key, offset in first_data_offsets(self.consumer, behind, PROBE_S).items())
        except Exception as exc:  # noqa: BLE001 (broker away: not drained, try again next pass)
            self._warn(exc)
            return False

    def _committed(self, group: str) -> dict[tuple[str, int], int]:
        request = [ConsumerGroupTopicPartitions(group)]
        answer = self.admin.list_consumer_group_offsets(request, request_timeout=TIMEOUT_S)[group].result(TIMEOUT_S)
        return {(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions or [] if tp.offset >= 0}

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            log.warning("pipeline progress not read; findings wait", extra={"error": repr(exc)[:500]})
            self._warned = True
