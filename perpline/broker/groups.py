"""Consumer groups in the embedded broker: the classic join / sync / heartbeat protocol and offsets.

States as in Kafka: Empty -> PreparingRebalance -> CompletingRebalance -> Stable. A join completes
when every member has sent JoinGroup (or its rebalance timeout passed); the leader's SyncGroup hands
out the assignments. A member that sends no heartbeat for its session timeout is removed. A static
member (group.instance.id, KIP-345) that joins again replaces its previous incarnation at once: a
processor restarted after a crash does not wait for the dead one's session to time out.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import TypeVar

from perpline.broker import errors as e

T = TypeVar("T")
MAX_GROUPS = 10_000
MAX_MEMBERS = 1_000  # per group


@dataclass(slots=True)
class JoinAnswer:
    error: int
    generation: int = -1
    protocol: str = ""
    leader: str = ""
    member_id: str = ""
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class Member:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    last_seen: float = field(default_factory=time.monotonic)
    joining: asyncio.Future[JoinAnswer] | None = None
    syncing: asyncio.Future[tuple[int, bytes]] | None = None
    assignment: bytes = b""


@dataclass(slots=True)
class Group:
    group_id: str
    state: str = "Empty"
    generation: int = 0
    protocol_type: str = ""
    protocol: str = ""
    leader: str = ""
    members: dict[str, Member] = field(default_factory=dict)
    offsets: dict[tuple[str, int], tuple[int, str | None]] = field(default_factory=dict)
    rebalance_started: float = 0.0
    pending: dict[str, float] = field(default_factory=dict)  # member ids handed out, not yet joined

    def rebalance(self) -> None:
        if self.state == "CompletingRebalance":
            for member in self.members.values():
                _answer(member.syncing, (e.REBALANCE_IN_PROGRESS, b""))
                member.syncing = None
        if self.state != "PreparingRebalance":
            self.state = "PreparingRebalance"
            self.rebalance_started = time.monotonic()


def _answer(future: asyncio.Future[T] | None, value: T) -> None:
    if future is not None and not future.done():
        future.set_result(value)


class Groups:
    """Every consumer group of the broker (it is its own and only coordinator)."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self._ids = itertools.count(1)

    def get(self, group_id: str) -> Group:
        group = self.groups.get(group_id)
        if group is None:
            if len(self.groups) >= MAX_GROUPS:
                raise e.BrokerLimit(f"more than {MAX_GROUPS} groups")
            group = self.groups[group_id] = Group(group_id)
        return group

    # --- membership ----------------------------------------------------------------------------

    async def join(self, group_id: str, member_id: str, instance_id: str | None, client_id: str, client_host: str,
                   session_ms: int, rebalance_ms: int, protocol_type: str, protocols: list[tuple[str, bytes]],
                   require_known_id: bool) -> JoinAnswer:
        group = self.get(group_id)
        if group.protocol_type and group.members and protocol_type != group.protocol_type:
            return JoinAnswer(e.INCONSISTENT_GROUP_PROTOCOL)
        if instance_id is not None and member_id not in group.members:
            if member_id:
                return JoinAnswer(e.FENCED_INSTANCE_ID, member_id=member_id)  # replaced by a newer instance
            member_id = self._replace_static(group, instance_id, client_id)
        elif not member_id:
            member_id = f"{client_id or 'member'}-{next(self._ids)}-{time.monotonic_ns()}"
            if require_known_id:
                if len(group.pending) >= MAX_MEMBERS:
                    return JoinAnswer(e.GROUP_MAX_SIZE_REACHED)
                group.pending[member_id] = time.monotonic() + session_ms / 1000
                return JoinAnswer(e.MEMBER_ID_REQUIRED, member_id=member_id)
        elif member_id not in group.members and group.pending.pop(member_id, None) is None:
            return JoinAnswer(e.UNKNOWN_MEMBER_ID, member_id=member_id)
        if member_id not in group.members and len(group.members) >= MAX_MEMBERS:
            return JoinAnswer(e.GROUP_MAX_SIZE_REACHED)
        member = group.members.get(member_id) or Member(member_id, instance_id, client_id, client_host, session_ms,
                                                        rebalance_ms, protocol_type, protocols)
        member.protocols, member.protocol_type = protocols, protocol_type
        member.session_timeout_ms, member.rebalance_timeout_ms = session_ms, rebalance_ms
        member.last_seen = time.monotonic()
        group.members[member_id] = member
        group.protocol_type = protocol_type
        _answer(member.joining, JoinAnswer(e.REBALANCE_IN_PROGRESS))  # a join sent twice: the older one yields
        joining: asyncio.Future[JoinAnswer] = asyncio.get_running_loop().create_future()
        member.joining = joining
        group.rebalance()
        self._maybe_complete(group)
        return await joining

    def _replace_static(self, group: Group, instance_id: str, client_id: str) -> str:
        """A new member id for a static member (group.instance.id) joining again: the instance it replaces
        (a restarted process) leaves at once instead of after its session timeout."""
        for old in [m for m in group.members.values() if m.instance_id == instance_id]:
            del group.members[old.member_id]
            _answer(old.joining, JoinAnswer(e.FENCED_INSTANCE_ID))
            _answer(old.syncing, (e.FENCED_INSTANCE_ID, b""))
        return f"{instance_id}-{client_id or 'member'}-{next(self._ids)}"

    def _maybe_complete(self, group: Group, force: bool = False) -> None:
        if group.state != "PreparingRebalance":
            return
        waiting = [m for m in group.members.values() if m.joining is None or m.joining.done()]
        if waiting and not force:
            return
        for member in waiting:  # rebalance timeout: members that did not rejoin are out
            del group.members[member.member_id]
        if not group.members:
            group.state, group.leader = "Empty", ""
            return
        protocol = _common_protocol(list(group.members.values()))
        if protocol is None:
            for member in group.members.values():
                _answer(member.joining, JoinAnswer(e.INCONSISTENT_GROUP_PROTOCOL))
            group.members.clear()
            group.state = "Empty"
            return
        group.generation += 1
        group.protocol = protocol
        if group.leader not in group.members:
            group.leader = next(iter(group.members))
        group.state = "CompletingRebalance"
        everyone = [(m.member_id, m.instance_id, dict(m.protocols)[protocol]) for m in group.members.values()]
        for member in group.members.values():
            member.last_seen = time.monotonic()
            answer = JoinAnswer(e.NONE, group.generation, protocol, group.leader, member.member_id,
                                everyone if member.member_id == group.leader else [])
            _answer(member.joining, answer)
            member.joining = None

    async def sync(self, group_id: str, generation: int, member_id: str,
                   assignments: dict[str, bytes]) -> tuple[int, bytes]:
        group = self.groups.get(group_id)
        member = group.members.get(member_id) if group else None
        if group is None or member is None:
            return e.UNKNOWN_MEMBER_ID, b""
        if generation != group.generation:
            return e.ILLEGAL_GENERATION, b""
        if group.state == "PreparingRebalance":
            return e.REBALANCE_IN_PROGRESS, b""
        member.last_seen = time.monotonic()
        if group.state == "Stable":
            return e.NONE, member.assignment
        if member_id == group.leader:
            for other in group.members.values():
                other.assignment = assignments.get(other.member_id, b"")
                _answer(other.syncing, (e.NONE, other.assignment))
                other.syncing = None
            group.state = "Stable"
            return e.NONE, member.assignment
        syncing: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        member.syncing = syncing
        return await syncing

    def heartbeat(self, group_id: str, generation: int, member_id: str) -> int:
        group = self.groups.get(group_id)
        member = group.members.get(member_id) if group else None
        if group is None or member is None:
            return e.UNKNOWN_MEMBER_ID
        member.last_seen = time.monotonic()
        if generation != group.generation:
            return e.ILLEGAL_GENERATION
        if group.state == "PreparingRebalance":
            return e.REBALANCE_IN_PROGRESS
        return e.NONE

    def leave(self, group_id: str, member_id: str) -> int:
        group = self.groups.get(group_id)
        member = group.members.pop(member_id, None) if group else None
        if group is None or member is None:
            return e.UNKNOWN_MEMBER_ID
        _answer(member.joining, JoinAnswer(e.UNKNOWN_MEMBER_ID))
        _answer(member.syncing, (e.UNKNOWN_MEMBER_ID, b""))
        self._after_removal(group)
        return e.NONE

    def _after_removal(self, group: Group) -> None:
        if not group.members:
            group.state, group.leader = "Empty", ""
            return
        group.rebalance()
        self._maybe_complete(group)

    def expire(self) -> None:
        """Remove members silent for their session timeout; end rebalances past their timeout."""
        now = time.monotonic()
        for group in self.groups.values():
            for member_id in [m for m, deadline in group.pending.items() if deadline < now]:
                del group.pending[member_id]
            silent = [m for m in group.members.values()
                      if m.joining is None and m.syncing is None and now - m.last_seen > m.session_timeout_ms / 1000]
            for member in silent:
                del group.members[member.member_id]
            if silent:
                self._after_removal(group)
            if group.state == "PreparingRebalance" and group.members:
                limit_s = max(m.rebalance_timeout_ms for m in group.members.values()) / 1000
                if now - group.rebalance_started > limit_s:
                    self._maybe_complete(group, force=True)

    # --- offsets ---------------------------------------------------------------------------------

    def commit_check(self, group_id: str, generation: int, member_id: str) -> int:
        if generation < 0:
            return e.NONE  # a commit from outside any generation (assign() users, tools)
        group = self.groups.get(group_id)
        if group is None or member_id not in group.members:
            return e.UNKNOWN_MEMBER_ID
        if generation != group.generation:
            return e.ILLEGAL_GENERATION
        return e.NONE

    def store(self, group_id: str, offsets: dict[tuple[str, int], tuple[int, str | None]]) -> None:
        self.get(group_id).offsets.update(offsets)


def _common_protocol(members: list[Member]) -> str | None:
    """The first protocol of the first member that every member supports."""
    names = [name for name, _ in members[0].protocols]
    for name in names:
        if all(any(n == name for n, _ in m.protocols) for m in members):
            return name
    return None
