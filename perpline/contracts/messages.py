"""Every message on every topic: one msgspec Struct per type, JSON on the wire.

Each message carries `trace_id` (assigned by the API request that caused it) and
`causation_id` (the id of the message or request that directly caused it).
Amounts, prices and quantities are decimal strings on the wire, integers inside
the processes (see perpline.contracts.units and Instrument.parse_*).
Each topic has one tagged union (field "type"), so a reader decodes exactly the
types its topic may carry and anything else is a malformed message.
"""

from __future__ import annotations

from typing import Literal, Union

import msgspec

Side = Literal["BUY", "SELL"]
OrderType = Literal["LIMIT", "MARKET"]
TimeInForce = Literal["GTC", "IOC", "FOK", "GTX"]
StpMode = Literal["DEFAULT", "NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]
OrderStatus = Literal["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED"]
Liquidity = Literal["MAKER", "TAKER"]


class Msg(msgspec.Struct, kw_only=True, tag_field="type", forbid_unknown_fields=True):
    trace_id: str
    causation_id: str
    ts_ms: int


# --- account.commands (key: account id) ------------------------------------------------


class ApiCommand(Msg, kw_only=True):
    """A command a client asked for through the API. A signed request's one-use token travels with
    it so the accounts processor, the single writer of the account, can refuse a replay that reached
    another API replica (perpline.accounts.memory.Memory.use_nonce)."""

    # perpline.auth.signing.nonce_of(signature) of a signed request; "" for a session or trusted-header call
    nonce: str = ""
    signed_ms: int = 0  # the signed request's `timestamp` (the client's clock); 0 without a signature


class Deposit(ApiCommand, tag="deposit", kw_only=True):
    request_id: str
    account_id: int
    asset: str
    amount: str


class Withdraw(ApiCommand, tag="withdraw", kw_only=True):
    request_id: str
    account_id: int
    asset: str
    amount: str


class PlaceOrder(ApiCommand, tag="place_order", kw_only=True):
    request_id: str
    account_id: int
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce = "GTC"
    price: str | None = None
    quantity: str
    client_order_id: str
    reduce_only: bool = False
    stp: StpMode = "DEFAULT"
    # MARKET only, set by the API from the book it sees: the worst price the order may fill at
    # (market protection). Margin is reserved at it and the matcher gets an IOC/FOK limit there.
    price_bound: str | None = None
    # Set by the API: the reference price of the price band (the last trade until the mark price
    # exists); a LIMIT price more than the instrument's band away from it is refused. None: no check.
    band_reference: str | None = None


class CancelOrder(ApiCommand, tag="cancel_order", kw_only=True):
    request_id: str
    account_id: int
    symbol: str
    order_id: int | None = None
    client_order_id: str | None = None


class CancelAll(ApiCommand, tag="cancel_all", kw_only=True):
    """Cancel every open order of the account in one symbol."""

    request_id: str
    account_id: int
    symbol: str


class SetLeverage(ApiCommand, tag="set_leverage", kw_only=True):
    request_id: str
    account_id: int
    symbol: str
    leverage: int


class AmendOrder(ApiCommand, tag="amend_order", kw_only=True):
    """Change an open order's price and/or quantity (total, filled part included). A smaller quantity
    at the same price keeps time priority; anything else re-queues it (it may then trade)."""

    request_id: str
    account_id: int
    symbol: str
    order_id: int | None = None
    client_order_id: str | None = None
    price: str | None = None  # None: keep the price
    quantity: str
    band_reference: str | None = None  # as in PlaceOrder


class FillLeg(Msg, tag="fill_leg", kw_only=True):
    """One side of a trade, from the matcher's clearing (perpline.matcher.legs). Idempotency key: (symbol, seq, liquidity)."""

    account_id: int
    symbol: str
    seq: int
    trade_id: int
    order_id: int
    liquidity: Liquidity
    side: Side
    price: str
    quantity: str
    order_leaves: str


class OrderDone(Msg, tag="order_done", kw_only=True):
    """An order left the book without (further) fills: cancelled, expired or rejected by the matcher."""

    account_id: int
    symbol: str
    seq: int
    order_id: int
    status: Literal["CANCELED", "EXPIRED", "REJECTED"]
    leaves: str
    code: int


class AmendDone(Msg, tag="amend_done", kw_only=True):
    """The matcher's answer to an amend (perpline.matcher.legs): applied (new price, quantity, leaves) or refused."""

    account_id: int
    symbol: str
    seq: int
    order_id: int
    ok: bool
    price: str = ""
    quantity: str = ""
    leaves: str = ""
    code: int = 0


class FundingCharge(Msg, tag="funding_charge", kw_only=True):
    """One account's payment at one funding time, computed by the risk process from every position
    at one cut of the symbol's trade stream (so the sizes of a round sum to zero). Idempotent by
    request_id "funding:<symbol>:<funding_time_ms>:<account>"."""

    request_id: str
    account_id: int
    symbol: str
    funding_time_ms: int
    rate: str  # signed; positive: longs pay shorts
    mark_price: str
    size: str  # signed position size at the cut
    amount: str  # signed: positive the account pays, negative it receives


class Liquidate(Msg, tag="liquidate", kw_only=True):
    """The mark crossed this position's liquidation price: cancel the account's orders in the symbol
    and close the position at no worse than its bankruptcy price. Applied only while the position is
    still at `position_version` (a stale or repeated request changes nothing)."""

    request_id: str
    account_id: int
    symbol: str
    position_version: int
    mark_price: str
    attempt: int = 0  # 0: close at no worse than the bankruptcy price; later: within 5% of the mark
    max_loss: str = ""  # later attempts: the most the insurance fund may pay beyond the bankruptcy price
    #                     ("": no bound given)


class Deleverage(Msg, tag="deleverage", kw_only=True):
    """Auto-deleveraging: one side of a forced trade at the bankrupt position's bankruptcy price, decided
    by the risk process when the market could not take the position (docs/risk.md). Both sides get one;
    idempotent by request_id "adl:<adl_id>:<account>"."""

    request_id: str
    account_id: int
    adl_id: str
    symbol: str
    side: Side  # what this account does: the bankrupt one closes, the counterparty reduces (or flips)
    quantity: str
    price: str
    bankrupt: bool


class Posting(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Signed amount: debit positive, credit negative. A journal's postings sum to zero per asset."""

    ledger_account: str  # "user:<id>:SPOT", "platform:FEE_REVENUE", ...
    asset: str
    amount: str


class RepairJournal(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One journal of a repair: `label` names it within the repair ("reverse", "correct"); its postings
    are in one asset and sum to zero."""

    label: str
    postings: list[Posting]


class PostRepair(Msg, tag="post_repair", kw_only=True):
    """A reconciliation repair's journals (ref type RECON_REPAIR) for one account, from the reconciler
    (perpline.recon.repairs). Idempotent by request_id "repair:<repair_id>:<account>". `books`: the
    accounts processor's own balances were wrong too (a fee it charged at the wrong rate), so they move
    with the journals; otherwise only the ledger's copy was wrong (a journal the processor never wrote)
    and the journals bring the ledger back to the processor's balances."""

    request_id: str
    account_id: int
    repair_id: str
    rule: str
    symbol: str = ""
    books: bool = False
    journals: list[RepairJournal]


AccountCommand = Union[Deposit, Withdraw, PlaceOrder, CancelOrder, CancelAll, SetLeverage, AmendOrder, FillLeg,
                       OrderDone, AmendDone, FundingCharge, Liquidate, Deleverage, PostRepair]


# --- orders (key: symbol) ------------------------------------------------------------------


class NewOrder(Msg, tag="new_order", kw_only=True):
    order_id: int
    account_id: int
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: str | None
    quantity: str
    client_order_id: str
    reduce_only: bool = False
    stp: StpMode = "DEFAULT"


class CancelRequest(Msg, tag="cancel", kw_only=True):
    order_id: int
    account_id: int
    symbol: str


class AmendRequest(Msg, tag="amend", kw_only=True):
    order_id: int
    account_id: int
    symbol: str
    price: str
    quantity: str  # the new total quantity


MatcherInput = Union[NewOrder, CancelRequest, AmendRequest]


# --- matcher.events (key: symbol); `seq` is gap-free per symbol -----------------------


class MatcherEventBase(Msg, kw_only=True):
    symbol: str
    seq: int


class OrderAccepted(MatcherEventBase, tag="accepted", kw_only=True):
    order_id: int
    account_id: int
    side: Side
    quantity: str


class OrderRested(MatcherEventBase, tag="rested", kw_only=True):
    order_id: int
    account_id: int
    side: Side
    price: str
    leaves: str


class Trade(MatcherEventBase, tag="trade", kw_only=True):
    trade_id: int
    price: str
    quantity: str
    taker_side: Side
    taker_order_id: int
    taker_account_id: int
    taker_leaves: str
    maker_order_id: int
    maker_account_id: int
    maker_leaves: str


class OrderCancelled(MatcherEventBase, tag="cancelled", kw_only=True):
    order_id: int
    account_id: int
    leaves: str
    code: int = 0


class OrderExpired(MatcherEventBase, tag="expired", kw_only=True):
    order_id: int
    account_id: int
    leaves: str
    code: int = 0


class OrderRejected(MatcherEventBase, tag="rejected", kw_only=True):
    """A new order the matcher refused. Code 3002 (duplicate order id) marks a redelivered input: ignored downstream."""

    order_id: int
    account_id: int
    code: int
    msg: str = ""


class CancelRejected(MatcherEventBase, tag="cancel_rejected", kw_only=True):
    """A cancel the matcher could not apply (order already gone, or not the owner's). Releases nothing."""

    order_id: int
    account_id: int
    code: int


class OrderAmended(MatcherEventBase, tag="amended", kw_only=True):
    """An amend applied: the order's new price, total quantity and open quantity. When it lost time
    priority, matching events (trade, rested, expired) for it follow."""

    order_id: int
    account_id: int
    price: str
    quantity: str
    leaves: str


class AmendRejected(MatcherEventBase, tag="amend_rejected", kw_only=True):
    order_id: int
    account_id: int
    code: int


MatcherEvent = Union[OrderAccepted, OrderRested, Trade, OrderCancelled, OrderExpired, OrderRejected, CancelRejected,
                     OrderAmended, AmendRejected]


# --- account.events (key: account id): the accounts processor's state changes ---------


class CommandResult(Msg, tag="command_result", kw_only=True):
    request_id: str
    account_id: int
    ok: bool
    code: int
    msg: str = ""
    order_id: int | None = None
    client_order_id: str | None = None
    order_ids: list[int] = []  # the orders a cancel-all asked the matcher to cancel


class BalanceChanged(Msg, tag="balance", kw_only=True):
    account_id: int
    asset: str
    available: str
    order_margin: str
    position_margin: str
    wallet: str
    version: int


class OrderView(msgspec.Struct, kw_only=True):
    order_id: int
    client_order_id: str
    account_id: int
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: str | None
    quantity: str
    filled: str
    avg_price: str
    status: OrderStatus
    reduce_only: bool
    created_ms: int
    updated_ms: int
    cum_quote: str = "0"  # filled value in the margin asset (sum of price x quantity over fills), exact
    margin: str = "0"  # the initial margin the open order holds now (its fee reservation not included)


class OrderChanged(Msg, tag="order", kw_only=True):
    account_id: int
    order: OrderView


class PositionChanged(Msg, tag="position", kw_only=True):
    account_id: int
    symbol: str
    size: str  # signed: positive long, negative short
    entry_price: str
    margin: str
    leverage: int
    realized_pnl: str
    version: int
    cost: str = "0"  # entry value of the open size (amount), exact


class FillRecorded(Msg, tag="fill", kw_only=True):
    account_id: int
    symbol: str
    trade_id: int
    order_id: int
    side: Side
    liquidity: Liquidity
    price: str
    quantity: str
    fee: str
    fee_asset: str
    realized_pnl: str


class FundingApplied(Msg, tag="funding", kw_only=True):
    account_id: int
    symbol: str
    funding_time_ms: int
    rate: str
    mark_price: str
    size: str
    amount: str  # signed: positive paid, negative received
    asset: str


class LiquidationDone(Msg, tag="liquidation", kw_only=True):
    """A liquidated position closed: what was left of its margin went to the insurance fund (positive)
    or the insurance fund covered a deficit (negative)."""

    account_id: int
    symbol: str
    order_id: int
    insurance_fund_delta: str
    asset: str


AccountEvent = Union[CommandResult, BalanceChanged, OrderChanged, PositionChanged, FillRecorded, FundingApplied,
                     LiquidationDone]


# --- ledger.entries (key: account id): balanced double-entry journals ------------------


class Journal(Msg, tag="journal", kw_only=True):
    journal_id: str  # deterministic: a replay produces the same id
    ref_type: str
    ref_id: str
    account_id: int
    symbol: str = ""
    postings: list[Posting]
    account_seq: int = 0  # 1, 2, 3... per account: the order the accounts processor wrote its journals in


LedgerEntry = Journal


# --- positions (key: symbol) -----------------------------------------------------------


class PositionSnapshot(Msg, tag="position_snapshot", kw_only=True):
    account_id: int
    symbol: str
    size: str
    entry_price: str
    margin: str
    leverage: int
    version: int
    cost: str = "0"  # entry value of the open size (amount), exact: the liquidation price is computed from it


class InsuranceFundMoved(Msg, tag="insurance_fund_moved", kw_only=True):
    """The insurance fund received (positive) or paid (negative) `amount` for a liquidated position:
    the risk process sums these into the fund's balance, the most it lets a liquidation lose."""

    account_id: int
    symbol: str
    asset: str
    amount: str
    cause: str


class LiquidationOrderDone(Msg, tag="liquidation_order_done", kw_only=True):
    """A liquidation order closed (filled, expired or cancelled), after the fills it had: the risk
    process decides the next attempt, or ADL, only once it has seen this for the previous one."""

    account_id: int
    symbol: str
    order_id: int
    client_order_id: str  # perpline.contracts.ids.liquidation_client_id(position version, attempt)
    filled: str


# --- prices.index / prices.mark / funding.rounds (key: symbol) ----------------------------


class IndexPrice(Msg, tag="index_price", kw_only=True):
    symbol: str
    price: str
    source: str


class MarkPrice(Msg, tag="mark_price", kw_only=True):
    """Published by the risk process every tick: the mark and what it was made of."""

    symbol: str
    mark_price: str
    index_price: str
    last_price: str
    mid_price: str  # "" when one side of the book is empty
    funding_rate: str  # the estimate for the next funding time, from the premiums sampled so far
    next_funding_ms: int
    index_stale: bool = False


class FundingRound(Msg, tag="funding_round", kw_only=True):
    """A funding time settled: every position's charge was sent before this record."""

    symbol: str
    funding_time_ms: int
    rate: str
    mark_price: str
    positions: int
    paid: str  # sum of what payers pay (rounded up)
    received: str  # sum of what receivers get (rounded down); paid - received stays in FUNDING_CLEARING


class AdlTrade(Msg, tag="adl_trade", kw_only=True):
    """The risk process's record of one auto-deleveraging decision (written before its commands): the
    trades it forces, so a restarted risk process counts them in every account's size."""

    adl_id: str
    symbol: str
    bankrupt_account: int
    side: Side  # the bankrupt account's side
    price: str
    fills: list[tuple[int, str]]  # (counterparty account, quantity)


PriceRecord = Union[IndexPrice, MarkPrice]


# --- wallet.statement (key: account_id) ------------------------------------------------


class WalletMovement(Msg, tag="wallet_movement", kw_only=True):
    """One movement the simulated wallet executed (perpline.wallet): a deposit it received on chain or a
    withdrawal it sent. The wallet's own record, the third party the reconciler checks the ledger against;
    `ref_id` is the exchange's reference it answers to (the journal's cause, ids.wallet_cause)."""

    wallet_tx_id: str
    direction: Literal["DEPOSIT", "WITHDRAWAL"]
    account_id: int
    asset: str
    amount: str  # decimal string, > 0
    ref_id: str
    request_id: str


# --- recon.breaks (key: rule) ------------------------------------------------------------


class ReconBreak(Msg, tag="recon_break", kw_only=True):
    """A reconciliation rule (clickhouse/queries/<rule>.sql) found a break, with its dimensions."""

    run_id: str
    rule: str
    severity: str
    asset: str = ""
    account_id: int = 0
    symbol: str = ""
    journal_id: str = ""
    ref_type: str = ""
    window_start_ms: int = 0
    window_end_ms: int = 0
    detail: str = ""


class ReconRepair(Msg, tag="recon_repair", kw_only=True):
    """A repair of a break (perpline.recon.repairs), published each time its status changes."""

    repair_id: str
    rule: str
    action: str
    policy: str
    status: str
    actor: str = ""
    asset: str = ""
    account_id: int = 0
    symbol: str = ""
    journal_id: str = ""
    journal_ids: list[str] = []
    voided: list[str] = []
    instructions: str = ""
    recheck: str = ""


# --- dead.letters (key: source) --------------------------------------------------------


class DeadLetter(Msg, tag="dead_letter", kw_only=True):
    source: str
    topic: str
    partition: int
    offset: int
    error: str
    payload: str  # the raw bytes, decoded as UTF-8 with replacement


# --- auth.keys (key: user id, or "user" for registrations; ONE partition: user ids are offsets,
# and the registry's one-use nonces and refresh rotations need one total order). Fields added
# later have defaults that are not written (omit_defaults), so a record that does not use them
# still decodes on a replica that predates them ---------------------------------------------

Permission = Literal["read", "trade", "withdraw", "manage_keys"]


class UserRegistered(Msg, tag="user_registered", kw_only=True):
    """A new user: its user id (= account id) is USER_ID_BASE + this record's offset in auth.keys,
    unique by construction without any other store."""

    request_id: str
    label: str = ""
    login: str = ""  # set for users who sign up with a password (the web terminal); unique, first wins
    password_hash: str = ""  # scrypt (perpline.auth.passwords); never the password


class ApiKeyIssued(Msg, tag="api_key_issued", kw_only=True, omit_defaults=True):
    """A new key. Every API replica applies auth.keys in offset order, so the log decides, the same
    way everywhere: a record whose `nonce` an earlier record already used is ignored (a replayed
    signed request; the key never becomes valid), and so is one whose `issued_by` key is not a live
    key of the same user holding manage_keys and every permission asked for."""

    api_key: str
    user_id: int
    secret_enc: str  # the HMAC secret, encrypted with the configured PERPLINE_SECRET_KEY (Fernet)
    permissions: list[Permission]
    label: str = ""
    nonce: str = ""  # one-use token of the request (SHA-256 of its signature, or random); "" = not checked
    issued_by: str = ""  # the API key that asked for it; "" = the owner (web session, `perpline admin`)


class ApiKeyRevoked(Msg, tag="api_key_revoked", kw_only=True, omit_defaults=True):
    """A key stops working; the same nonce and `revoked_by` rules as ApiKeyIssued (a key may revoke
    only keys whose permissions it holds all of)."""

    api_key: str
    user_id: int
    nonce: str = ""
    revoked_by: str = ""


class SessionStarted(Msg, tag="session_started", kw_only=True, omit_defaults=True):
    """A login, or a refresh when `replaces` names the session it rotates. Only the refresh token's
    SHA-256 is stored. A replacing session takes effect only if the replaced one is, when this record
    is applied, still open, unexpired and the same user's; it then ends in the same step. Of two
    refreshes with one token, the first on the log wins on every replica; the other never starts."""

    session_id: str
    user_id: int
    refresh_hash: str
    expires_ms: int
    replaces: str = ""


class SessionEnded(Msg, tag="session_ended", kw_only=True):
    """Logout or refresh (the old session ends as the new one starts): its tokens stop working."""

    session_id: str
    user_id: int


AuthRecord = UserRegistered | ApiKeyIssued | ApiKeyRevoked | SessionStarted | SessionEnded


TOPIC_TYPES: dict[str, object] = {
    "account.commands": AccountCommand,
    "orders": MatcherInput,
    "matcher.events": MatcherEvent,
    "account.events": AccountEvent,
    "ledger.entries": LedgerEntry,
    "positions": PositionSnapshot | InsuranceFundMoved | LiquidationOrderDone,
    "dead.letters": DeadLetter,
    "auth.keys": AuthRecord,
    "prices.index": IndexPrice,
    "prices.mark": MarkPrice,
    "funding.rounds": FundingRound | AdlTrade,
    "recon.breaks": ReconBreak | ReconRepair,
    "wallet.statement": WalletMovement,
}
