"""Double-entry journals. Postings are signed: debit positive, credit negative.

User accounts (SPOT, ORDER_MARGIN, POSITION_MARGIN) are liabilities of the exchange:
their natural balance is the negated sum of their postings. Platform accounts:
HOT_WALLET (asset), FEE_REVENUE (equity), PNL_CLEARING (the counterparty of realised
PnL between users), INSURANCE_FUND, FUNDING_CLEARING.
`transfer(debit, credit, amount)` is the only way to write a pair, so every journal
sums to zero by construction; `Journal` is asserted balanced before it leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from perpline.contracts import ids
from perpline.contracts import messages as m
from perpline.contracts.units import format_amount, parse_amount

MAX_POSTINGS = 64


def user_account(account_id: int, kind: str) -> str:
    assert kind in ("SPOT", "ORDER_MARGIN", "POSITION_MARGIN")
    return f"user:{account_id}:{kind}"


def platform_account(kind: str) -> str:
    assert kind in ("HOT_WALLET", "FEE_REVENUE", "PNL_CLEARING", "INSURANCE_FUND", "FUNDING_CLEARING")
    return f"platform:{kind}"


@dataclass
class JournalBuilder:
    ref_type: str
    ref_id: str
    account_id: int
    asset: str
    symbol: str = ""
    postings: list[tuple[str, int]] = field(default_factory=list)

    def transfer(self, debit: str, credit: str, amount: int) -> JournalBuilder:
        assert amount >= 0, "transfer amounts are non-negative; swap the accounts instead"
        if amount:
            self.postings.append((debit, amount))
            self.postings.append((credit, -amount))
        assert len(self.postings) <= MAX_POSTINGS
        return self

    def build(self, trace_id: str, causation_id: str, ts_ms: int, account_seq: int = 0) -> m.Journal | None:
        if not self.postings:
            return None
        assert sum(amount for _, amount in self.postings) == 0, "unbalanced journal"
        return m.Journal(
            trace_id=trace_id,
            causation_id=causation_id,
            ts_ms=ts_ms,
            journal_id=ids.journal_id(self.ref_id, self.ref_type),
            ref_type=self.ref_type,
            ref_id=self.ref_id,
            account_id=self.account_id,
            symbol=self.symbol,
            postings=[m.Posting(ledger_account=a, asset=self.asset, amount=format_amount(x)) for a, x in self.postings],
            account_seq=account_seq,
        )


def journal_sum(journal: m.Journal, asset: str | None = None) -> int:
    return sum(parse_amount(p.amount, allow_negative=True) for p in journal.postings if asset in (None, p.asset))
