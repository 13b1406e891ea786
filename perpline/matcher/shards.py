"""Matcher shards: which `orders` partitions one matcher process owns, and where its WAL and snapshots live.

Scale-out is static: shard I of N owns the `orders` partitions p with p % N == I, and nothing else, for
its whole life. The matcher assigns those partitions itself (no consumer-group membership), so no
rebalance ever moves a symbol to another shard while a book for it lives in this shard's WAL and
snapshots. Symbols map to partitions as they always did (the producers' murmur2 on the symbol key), so
each symbol is matched by exactly one shard.

The shard is given by `--shard/--shards`, else PERPLINE_MATCHER_SHARD / PERPLINE_MATCHER_SHARDS, else (for
the shard only) the StatefulSet ordinal at the end of PERPLINE_INSTANCE_ID or the host name ("matcher-1"
-> 1). N is bounded by the partitions of `orders` (redpanda/topics.yaml): a shard with no partition
would sit idle while looking healthy, so N > partitions is refused at start.

Data dir layout: N == 1 keeps `<data-dir>` itself (every existing stack and test is untouched); N > 1
uses `<data-dir>/shard-I`. The shard's dir holds `shard.json` (shard, shards, partitions), written at its
first start and checked at every start: a books' WAL written under one partitioning replayed under
another would match a symbol in two shards or in none, so any other N or I refuses with a clear error
rather than silently re-partitioning. The snapshot header records the same identity (checked again at
restore).
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from perpline.contracts import topics
from perpline.contracts.codes import Code, PerplineError

SHARD_ENV = "PERPLINE_MATCHER_SHARD"
SHARDS_ENV = "PERPLINE_MATCHER_SHARDS"
INSTANCE_ENV = "PERPLINE_INSTANCE_ID"
IDENTITY_FILE = "shard.json"
SHARD_DIR_PREFIX = "shard-"
MAX_SHARDS = topics.MAX_PARTITIONS
_ORDINAL = re.compile(r"-(\d+)$")
_STATE_DIRS = ("wal", "snapshots")  # what a matcher writes into its data dir


class ShardError(PerplineError):
    """The shard configuration or the data dir does not allow this matcher to start."""


@dataclass(frozen=True)
class Shard:
    shard: int
    shards: int

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= MAX_SHARDS or not 0 <= self.shard < self.shards:
            raise ShardError(Code.MATCHER_SHARD_INVALID,
                             f"shard {self.shard} of {self.shards}: need 1 <= shards <= {MAX_SHARDS} and 0 <= shard < shards")

    def owns(self, partition: int) -> bool:
        return partition % self.shards == self.shard

    def partitions(self, all_partitions: Iterable[int]) -> list[int]:
        """The partitions of `all_partitions` this shard owns, sorted."""
        return sorted(p for p in all_partitions if self.owns(p))

    def data_dir(self, root: Path) -> Path:
        return root if self.shards == 1 else root / f"{SHARD_DIR_PREFIX}{self.shard}"

    def identity(self, partition_count: int) -> dict[str, object]:
        """What the shard's data dir and snapshots record about who wrote them."""
        return {"shard": self.shard, "shards": self.shards, "partitions": self.partitions(range(partition_count))}

    def __str__(self) -> str:
        return f"shard {self.shard} of {self.shards}"


def ordinal(name: str) -> int | None:
    """The StatefulSet ordinal at the end of a pod name ("matcher-1" -> 1), or None."""
    found = _ORDINAL.search(name)
    return int(found.group(1)) if found else None


def resolve(shard: int | None, shards: int | None, env: Mapping[str, str] | None = None) -> Shard:
    """The shard from the flags, else the environment, else (the shard only, with N > 1) the pod ordinal."""
    env = os.environ if env is None else env
    count = shards if shards is not None else _int_env(env, SHARDS_ENV, 1)
    index = shard if shard is not None else _int_env(env, SHARD_ENV, None)
    if index is None:
        index = 0 if count == 1 else ordinal(env.get(INSTANCE_ENV) or socket.gethostname())
    if index is None:
        raise ShardError(Code.MATCHER_SHARD_INVALID, f"{count} shards but no shard index: pass --shard, set {SHARD_ENV}, "
                                                     f"or run as a StatefulSet pod (name ending -<ordinal>)")
    return Shard(index, count)


def _int_env(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ShardError(Code.MATCHER_SHARD_INVALID, f"{name}={raw!r} is not an integer") from None


def check_count(shard: Shard, partition_count: int) -> None:
    """Refuse more shards than `orders` has partitions: the extra shards would own nothing."""
    if shard.shards > partition_count:
        raise ShardError(Code.MATCHER_SHARD_INVALID,
                         f"{shard.shards} matcher shards but `orders` has {partition_count} partitions: "
                         f"at most {partition_count} shards (each owns the partitions p with p % shards == shard)")


def orders_partitions() -> int:
    return topics.spec(topics.ORDERS).partitions


def claim(root: Path, shard: Shard, partition_count: int) -> Path:
    """Check that `root` holds no other shard layout, record this shard's identity in its dir; returns the dir."""
    check_count(shard, partition_count)
    _check_layout(root, shard)
    directory = shard.data_dir(root)
    wanted = shard.identity(partition_count)
    path = directory / IDENTITY_FILE
    if path.exists():
        found = json.loads(path.read_text())
        if found != wanted:
            raise ShardError(Code.MATCHER_SHARD_MISMATCH, f"{directory} was written by {_describe(found)}, this is "
                             f"{_describe(wanted)}: refusing to re-partition its books (use another --data-dir, "
                             "or the shard layout it was written with)")
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(wanted))
    os.replace(temp, path)
    return directory


def _check_layout(root: Path, shard: Shard) -> None:
    """A single matcher's dir never holds shard-* dirs, a sharded root never holds a single matcher's state,
    and every shard-* dir under a sharded root was written with the same N."""
    shard_dirs = sorted(root.glob(f"{SHARD_DIR_PREFIX}*")) if root.exists() else []
    if shard.shards == 1 and shard_dirs:
        raise ShardError(Code.MATCHER_SHARD_MISMATCH, f"{root} holds the dirs of a sharded matcher "
                         f"({', '.join(d.name for d in shard_dirs)}), this is a single matcher: refusing to re-partition")
    if shard.shards > 1 and any((root / sub).exists() for sub in _STATE_DIRS):
        raise ShardError(Code.MATCHER_SHARD_MISMATCH, f"{root} holds a single matcher's WAL/snapshots, this is "
                         f"{shard}: refusing to re-partition its books")
    for other in shard_dirs:
        index = other.name[len(SHARD_DIR_PREFIX):]
        recorded = other / IDENTITY_FILE
        count = json.loads(recorded.read_text()).get("shards") if recorded.exists() else None
        if not index.isdigit() or int(index) >= shard.shards or (count is not None and count != shard.shards):
            raise ShardError(Code.MATCHER_SHARD_MISMATCH, f"{other} belongs to another shard layout "
                             f"({count or '?'} shards), this is {shard}: refusing to re-partition")


def check_snapshot(shard: Shard, header: Mapping[str, object], partition_count: int) -> None:
    """A snapshot written by another shard identity must never be restored (one written before shards
    existed has no identity and is a single matcher's)."""
    recorded = {k: header.get(k) for k in ("shard", "shards", "partitions")}
    if recorded["shards"] is None:
        recorded = Shard(0, 1).identity(partition_count)
    wanted = shard.identity(partition_count)
    if recorded != wanted:
        raise ShardError(Code.MATCHER_SHARD_MISMATCH, f"snapshot written by {_describe(recorded)}, this is "
                         f"{_describe(wanted)}")


def check_input(shard: Shard, partition: int) -> None:
    """Static assignment means this never fires; if it does, matching it here would put a symbol in two shards."""
    if not shard.owns(partition):
        raise ShardError(Code.MATCHER_WRONG_PARTITION, f"input from `orders` partition {partition}, which {shard} "
                         "does not own")


def _describe(identity: Mapping[str, object]) -> str:
    return f"shard {identity.get('shard')} of {identity.get('shards')} (partitions {identity.get('partitions')})"
