"""Topic names and specs, read from redpanda/topics.yaml (the single source of truth).

Code spells a topic name only through the constants below; `physical()` adds the
PERPLINE_TOPIC_PREFIX that isolates test runs on a shared broker. Loading the YAML
checks that it declares exactly the topics named here, so a rename fails at start-up,
not at the first message.

Environment: PERPLINE_TOPICS_FILE (another topics.yaml), PERPLINE_TOPIC_PREFIX (default
""), PERPLINE_REPLICATION_FACTOR (overrides every topic's replication factor),
PERPLINE_MAX_PARTITIONS (caps every topic's partitions but those marked `fixed_partitions`).

Partitions are the unit of parallelism: production runs one accounts processor (or matcher
shard) per partition. On one node with one process of each, extra partitions buy nothing and
cost the broker: librdkafka sends one produce request per partition, so an accounts transaction
that touches four partitions of each of five topics is about sixteen produce requests instead of
five. The embedded stack caps them (perpline.stack.up); see docs/architecture.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml

ACCOUNT_COMMANDS: Final = "account.commands"
ORDERS: Final = "orders"
MATCHER_EVENTS: Final = "matcher.events"
ACCOUNT_EVENTS: Final = "account.events"
LEDGER_ENTRIES: Final = "ledger.entries"
POSITIONS: Final = "positions"
PRICES_INDEX: Final = "prices.index"
PRICES_MARK: Final = "prices.mark"
WALLET_STATEMENT: Final = "wallet.statement"
RECON_BREAKS: Final = "recon.breaks"
DEAD_LETTERS: Final = "dead.letters"
AUTH_KEYS: Final = "auth.keys"
FUNDING_ROUNDS: Final = "funding.rounds"
API_CHECKPOINTS: Final = "api.checkpoints"

ALL: Final[tuple[str, ...]] = (
    ACCOUNT_COMMANDS, ORDERS, MATCHER_EVENTS, ACCOUNT_EVENTS, LEDGER_ENTRIES, POSITIONS,
    PRICES_INDEX, PRICES_MARK, WALLET_STATEMENT, RECON_BREAKS, FUNDING_ROUNDS, AUTH_KEYS, DEAD_LETTERS, API_CHECKPOINTS,
)

TOPICS_FILE_ENV: Final = "PERPLINE_TOPICS_FILE"
PREFIX_ENV: Final = "PERPLINE_TOPIC_PREFIX"
REPLICATION_ENV: Final = "PERPLINE_REPLICATION_FACTOR"
MAX_PARTITIONS_ENV: Final = "PERPLINE_MAX_PARTITIONS"
MAX_PARTITIONS: Final = 1024


class TopicsFileError(ValueError):
    """topics.yaml is malformed or disagrees with the constants of this module."""


@dataclass(frozen=True)
class TopicSpec:
    name: str  # logical name, as in topics.yaml (no prefix)
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]  # read-only; explicit, Tansu and Quix need retention.*
    key: str  # what the message key is: account_id, symbol, rule, source
    writers: tuple[str, ...] = ()
    readers: tuple[str, ...] = ()
    fixed_partitions: bool = False  # each partition has its own role: never capped

    def physical(self, prefix: str | None = None) -> str:
        return physical(self.name, prefix)


def default_topics_file() -> Path:
    override = os.environ.get(TOPICS_FILE_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "redpanda" / "topics.yaml"


def prefix() -> str:
    return os.environ.get(PREFIX_ENV, "")


def physical(name: str, topic_prefix: str | None = None) -> str:
    """The name on the broker of logical topic `name`."""
    if name not in ALL:
        raise KeyError(f"unknown topic {name!r}")
    return f"{prefix() if topic_prefix is None else topic_prefix}{name}"


def specs() -> dict[str, TopicSpec]:
    """Every topic spec by logical name, from PERPLINE_TOPICS_FILE or the repo's topics.yaml."""
    return dict(_load_cached(str(default_topics_file()), os.environ.get(REPLICATION_ENV, ""),
                             os.environ.get(MAX_PARTITIONS_ENV, "")))


def spec(name: str) -> TopicSpec:
    try:
        return specs()[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}") from None


@lru_cache(maxsize=8)
def _load_cached(path: str, replication_override: str, partition_cap: str) -> Mapping[str, TopicSpec]:
    loaded = load(Path(path))
    if replication_override:
        rf = _positive_int(replication_override, REPLICATION_ENV)
        loaded = {n: replace(s, replication_factor=rf) for n, s in loaded.items()}
    if partition_cap:
        cap = _positive_int(partition_cap, MAX_PARTITIONS_ENV)
        loaded = {n: capped(s, cap) for n, s in loaded.items()}
    return MappingProxyType(loaded)


def capped(s: TopicSpec, cap: int) -> TopicSpec:
    """`s` with at most `cap` partitions, unless its partitions each have a role."""
    return s if s.fixed_partitions or s.partitions <= cap else replace(s, partitions=cap)


def load(path: Path) -> dict[str, TopicSpec]:
    """Parse and check a topics.yaml; raises TopicsFileError."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("topics"), dict):
        raise TopicsFileError(f"{path}: expected a mapping with 'topics'")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise TopicsFileError(f"{path}: 'defaults' must be a mapping")
    loaded = {str(name): _parse_topic(str(name), raw, defaults) for name, raw in doc["topics"].items()}
    check_names(loaded)
    return loaded


def check_names(loaded: Mapping[str, TopicSpec]) -> None:
    missing, extra = set(ALL) - set(loaded), set(loaded) - set(ALL)
    if missing or extra:
        raise TopicsFileError(f"topics.yaml and perpline.contracts.topics disagree: "
                              f"missing {sorted(missing)}, unknown {sorted(extra)}")


def _parse_topic(name: str, raw: Any, defaults: dict[str, Any]) -> TopicSpec:
    if not isinstance(raw, dict):
        raise TopicsFileError(f"topic {name!r}: expected a mapping")
    configs = {**_str_map(defaults.get("configs"), name), **_str_map(raw.get("configs"), name)}
    partitions = _positive_int(raw.get("partitions"), f"{name}.partitions")
    if partitions > MAX_PARTITIONS:
        raise TopicsFileError(f"{name}.partitions: {partitions} > {MAX_PARTITIONS}")
    rf = _positive_int(raw.get("replication_factor", defaults.get("replication_factor", 1)),
                       f"{name}.replication_factor")
    key = raw.get("key")
    if not isinstance(key, str) or not key:
        raise TopicsFileError(f"{name}.key: a non-empty string is required")
    return TopicSpec(name=name, partitions=partitions, replication_factor=rf,
                     configs=MappingProxyType(configs), key=key,
                     writers=_str_tuple(raw.get("writers"), name), readers=_str_tuple(raw.get("readers"), name),
                     fixed_partitions=_bool(raw.get("fixed_partitions", False), f"{name}.fixed_partitions"))


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise TopicsFileError(f"{what}: expected a positive integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise TopicsFileError(f"{what}: expected a positive integer, got {value!r}") from None
    if number < 1 or str(number) != str(value).strip():
        raise TopicsFileError(f"{what}: expected a positive integer, got {value!r}")
    return number


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise TopicsFileError(f"{what}: expected true or false, got {value!r}")
    return value


def _str_map(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TopicsFileError(f"{name}.configs: expected a mapping")
    return {str(k): str(v) for k, v in value.items()}


def _str_tuple(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise TopicsFileError(f"{name}: writers/readers must be lists")
    return tuple(str(v) for v in value)
