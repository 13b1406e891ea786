"""Journal plumbing of the accounts processor: what one command's outputs share (`Ctx`), the topics
they go to, and the journals, which are placeholders while a handler writes their transfers and become
numbered `Journal` messages only when the command is complete (`finalize`).

Every other accounts module builds on this one and it imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from perpline.accounts.ledger import JournalBuilder, platform_account, user_account
from perpline.accounts.memory import Memory
from perpline.accounts.state import AccountState

LOGICAL_ORDERS = "orders"
LOGICAL_ACCOUNT_EVENTS = "account.events"
LOGICAL_LEDGER = "ledger.entries"
LOGICAL_POSITIONS = "positions"


@dataclass
class Out:
    topic: str
    key: str
    msg: object  # a message Struct (a JournalBuilder only until finalize)


@dataclass
class Ctx:
    """What every output of one command shares: its trace, its cause and its time."""

    trace_id: str
    causation_id: str
    ts_ms: int
    memory: Memory
    outs: list[Out] = field(default_factory=list)

    def emit(self, topic: str, key: str | int, msg: object) -> None:
        self.outs.append(Out(topic, str(key), msg))

    def meta(self) -> dict[str, object]:
        return {"trace_id": self.trace_id, "causation_id": self.causation_id, "ts_ms": self.ts_ms}


def journal(ctx: Ctx, state: AccountState, ref_type: str, ref_id: str, asset: str, symbol: str = "") -> JournalBuilder:
    """A journal placeholder at this point of the output order, filled by its transfers, built in finalize."""
    builder = JournalBuilder(ref_type, ref_id, state.account_id, asset, symbol)
    ctx.outs.append(Out(LOGICAL_LEDGER, str(state.account_id), builder))
    return builder


def realized_pnl_journal(ctx: Ctx, state: AccountState, cause: str, asset: str, symbol: str, pnl: int) -> None:
    """POSITION_REALIZED_PNL: a profit from PNL_CLEARING to the user's SPOT, a loss the other way."""
    spot, clearing = user_account(state.account_id, "SPOT"), platform_account("PNL_CLEARING")
    transfer_signed(journal(ctx, state, "POSITION_REALIZED_PNL", cause, asset, symbol), clearing, spot, pnl)


def transfer_signed(builder: JournalBuilder, source: str, sink: str, amount: int) -> None:
    """`amount` from `source` to `sink`; a negative amount goes the other way."""
    if amount >= 0:
        builder.transfer(source, sink, amount)
    else:
        builder.transfer(sink, source, -amount)


def finalize(ctx: Ctx, state: AccountState) -> list[Out]:
    """Build the journals (dropping empty ones, numbering the others per account) so every output is a
    concrete message."""
    result = []
    for out in ctx.outs:
        if isinstance(out.msg, JournalBuilder):
            built = out.msg.build(ctx.trace_id, ctx.causation_id, ctx.ts_ms, state.journal_seq + 1)
            if built is None:
                continue
            state.journal_seq += 1
            out = Out(out.topic, out.key, built)
        result.append(out)
    return result
