"""Response bodies, as /openapi.json describes them and the contract test checks them
(tests/e2e/test_api_contract.py validates every 200 body against these). Documentation models:
the routes return their renderers' dicts unchanged (perpline.api.native, perpline.api.binance), so
a Binance field name is spelled exactly as ccxt reads it, and a body that drifts from its model
fails the contract test rather than being silently reshaped."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import SkipJsonSchema

from perpline.contracts.messages import Liquidity, OrderStatus, OrderType, Side, TimeInForce

Dec = str  # a decimal string: amounts, prices, quantities and rates are never JSON numbers
Level = tuple[Dec, Dec]  # [price, quantity]
Absent = SkipJsonSchema[None]  # `int | Absent = None`: a key some answers leave out (never sent as null)


def ok(model: Any, description: str = "success") -> dict[int | str, dict[str, Any]]:
    """A route's documented 200 body."""
    return {200: {"model": model, "description": description}}


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Empty(Body):
    pass


class Status(Body):
    status: str


class ServerTime(Body):
    serverTime: int  # noqa: N815 (Binance's wire names, as ccxt reads them)


class BinanceDepth(Body):
    lastUpdateId: int  # noqa: N815
    E: int
    T: int
    bids: list[Level]
    asks: list[Level]


class BinanceTrade(Body):
    id: int
    price: Dec
    qty: Dec
    quoteQty: Dec  # noqa: N815
    time: int
    isBuyerMaker: bool  # noqa: N815


class BinanceAggTrade(Body):
    a: int
    p: Dec
    q: Dec
    f: int
    l: int  # noqa: E741
    T: int
    m: bool


class BinanceTicker(Body):
    symbol: str
    priceChange: Dec  # noqa: N815
    priceChangePercent: Dec  # noqa: N815
    weightedAvgPrice: Dec  # noqa: N815
    lastPrice: Dec  # noqa: N815
    lastQty: Dec  # noqa: N815
    openPrice: Dec  # noqa: N815
    highPrice: Dec  # noqa: N815
    lowPrice: Dec  # noqa: N815
    volume: Dec
    quoteVolume: Dec  # noqa: N815
    openTime: int  # noqa: N815
    closeTime: int  # noqa: N815
    firstId: int  # noqa: N815
    lastId: int  # noqa: N815
    count: int


class BinancePremium(Body):
    symbol: str
    markPrice: Dec  # noqa: N815
    indexPrice: Dec  # noqa: N815
    estimatedSettlePrice: Dec  # noqa: N815
    lastFundingRate: Dec  # noqa: N815
    interestRate: Dec  # noqa: N815
    nextFundingTime: int  # noqa: N815
    time: int


class BinanceFundingRate(Body):
    symbol: str
    fundingTime: int  # noqa: N815
    fundingRate: Dec  # noqa: N815
    markPrice: Dec  # noqa: N815


# [open time, open, high, low, close, volume, close time, quote volume, trades, taker buy volume,
#  taker buy quote volume, "0"]
BinanceKline = tuple[int, Dec, Dec, Dec, Dec, Dec, int, Dec, int, Dec, Dec, Dec]


class NativeDepth(Body):
    symbol: str
    seq: int
    bids: list[Level]
    asks: list[Level]


class NativeTrade(Body):
    trade_id: int
    price: Dec
    quantity: Dec
    taker_side: str
    ts_ms: int
    seq: int


class Candle(Body):
    open_time: int
    open: Dec
    high: Dec
    low: Dec
    close: Dec
    volume: Dec
    close_time: int
    quote_volume: Dec
    trades: int


class NativeTicker(Body):
    symbol: str
    open: Dec
    high: Dec
    low: Dec
    last: Dec
    change: Dec
    change_percent: Dec
    volume: Dec
    quote_volume: Dec
    trades: int
    open_time: int
    close_time: int


# --- /fapi: exchange info (perpline.api.binance.symbol_info) ------------------------------------
# Binance's camelCase names are the wire's, as ccxt reads them.


class BinanceRateLimit(Body):
    rateLimitType: str
    interval: str
    intervalNum: int
    limit: int


class BinanceAsset(Body):
    asset: str
    marginAvailable: bool
    autoAssetExchange: Dec


class PriceFilter(Body):
    filterType: Literal["PRICE_FILTER"]
    tickSize: Dec
    minPrice: Dec
    maxPrice: Dec


class LotSizeFilter(Body):
    filterType: Literal["LOT_SIZE", "MARKET_LOT_SIZE"]
    stepSize: Dec
    minQty: Dec
    maxQty: Dec


class MaxOrdersFilter(Body):
    filterType: Literal["MAX_NUM_ORDERS"]
    limit: int


class MinNotionalFilter(Body):
    filterType: Literal["MIN_NOTIONAL"]
    notional: Dec


class PercentPriceFilter(Body):
    filterType: Literal["PERCENT_PRICE"]
    multiplierDecimal: Dec
    multiplierUp: Dec
    multiplierDown: Dec


class BinanceSymbol(Body):
    symbol: str
    pair: str
    contractType: str
    status: str
    baseAsset: str
    quoteAsset: str
    marginAsset: str
    pricePrecision: int
    quantityPrecision: int
    baseAssetPrecision: int
    quotePrecision: int
    onboardDate: int
    underlyingType: str
    triggerProtect: Dec
    liquidationFee: Dec
    marketTakeBound: Dec
    maintMarginPercent: Dec
    requiredMarginPercent: Dec
    orderTypes: list[OrderType]
    timeInForce: list[TimeInForce]
    filters: list[PriceFilter | LotSizeFilter | MaxOrdersFilter | MinNotionalFilter | PercentPriceFilter]


class BinanceExchangeInfo(Body):
    timezone: str
    serverTime: int
    futuresType: str
    rateLimits: list[BinanceRateLimit]
    exchangeFilters: list[Any]
    assets: list[BinanceAsset]
    symbols: list[BinanceSymbol]


# --- /fapi: orders, trades, positions, account (perpline.api.binance, perpline.api.fapi) ----------


class BinanceOrder(Body):
    orderId: int
    symbol: str
    status: OrderStatus
    clientOrderId: str
    price: Dec
    avgPrice: Dec
    origQty: Dec
    executedQty: Dec
    cumQty: Dec
    cumQuote: Dec
    timeInForce: TimeInForce
    type: OrderType
    origType: OrderType
    reduceOnly: bool
    closePosition: bool
    side: Side
    positionSide: str
    stopPrice: Dec
    workingType: str
    priceProtect: bool
    priceMatch: str
    selfTradePreventionMode: str
    goodTillDate: int
    time: int
    updateTime: int


class BinanceCancelAll(Body):
    msg: str


class BinanceUserTrade(Body):
    symbol: str
    id: int
    orderId: int
    side: Side
    price: Dec
    qty: Dec
    quoteQty: Dec
    commission: Dec
    commissionAsset: str
    realizedPnl: Dec
    time: int
    maker: bool
    buyer: bool
    positionSide: str


class BinancePosition(Body):
    symbol: str
    positionSide: str
    positionAmt: Dec
    entryPrice: Dec
    breakEvenPrice: Dec
    markPrice: Dec
    unRealizedProfit: Dec
    liquidationPrice: Dec
    isolatedMargin: Dec
    notional: Dec
    marginAsset: str
    isolatedWallet: Dec
    initialMargin: Dec
    maintMargin: Dec
    positionInitialMargin: Dec
    openOrderInitialMargin: Dec
    adl: int
    bidNotional: Dec
    askNotional: Dec
    leverage: Dec
    marginType: str
    updateTime: int


class BinanceAccountAsset(Body):
    asset: str
    walletBalance: Dec
    unrealizedProfit: Dec
    marginBalance: Dec
    maintMargin: Dec
    initialMargin: Dec
    positionInitialMargin: Dec
    openOrderInitialMargin: Dec
    crossWalletBalance: Dec
    crossUnPnl: Dec
    availableBalance: Dec
    maxWithdrawAmount: Dec
    marginAvailable: bool
    updateTime: int


class BinanceAccount(Body):
    totalInitialMargin: Dec
    totalMaintMargin: Dec
    totalWalletBalance: Dec
    totalUnrealizedProfit: Dec
    totalMarginBalance: Dec
    availableBalance: Dec
    maxWithdrawAmount: Dec
    assets: list[BinanceAccountAsset]
    positions: list[BinancePosition]


class BinanceBalance(Body):
    accountAlias: str
    asset: str
    balance: Dec
    crossWalletBalance: Dec
    crossUnPnl: Dec
    availableBalance: Dec
    maxWithdrawAmount: Dec
    marginAvailable: bool
    updateTime: int


class BinanceBracket(Body):
    bracket: int
    initialLeverage: int
    notionalCap: int
    notionalFloor: int
    maintMarginRatio: Dec
    cum: Dec


class BinanceLeverageBracket(Body):
    symbol: str
    notionalCoef: Dec
    brackets: list[BinanceBracket]


class BinanceCommissionRate(Body):
    symbol: str
    makerCommissionRate: Dec
    takerCommissionRate: Dec


class BinanceLeverage(Body):
    symbol: str
    leverage: int
    maxNotionalValue: Dec


class BinanceIncome(Body):
    symbol: str
    incomeType: Literal["COMMISSION", "REALIZED_PNL", "FUNDING_FEE"]
    income: Dec
    asset: str
    info: str
    time: int
    tranId: int
    tradeId: str


class ListenKey(Body):
    listenKey: str


# --- /api/v1: orders and requests (perpline.api.native, perpline.api.v1) -------------------------


class _OrderFields(Body):
    """contracts.messages.OrderView's fields but its id (a string on the native API, a number when stored)."""

    client_order_id: str
    account_id: int
    symbol: str
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: Dec | None
    quantity: Dec
    filled: Dec
    avg_price: Dec
    status: OrderStatus
    reduce_only: bool
    created_ms: int
    updated_ms: int
    cum_quote: Dec
    margin: Dec


class NativeOrder(_OrderFields):
    """An order as the accounts processor publishes it (contracts.messages.OrderView); the id a string."""

    order_id: str


class PlacedOrder(Body):
    request_id: str
    order_id: str
    order: NativeOrder
    code: int | Absent = None  # why the matcher ended it (REJECTED or EXPIRED), else absent
    msg: str | Absent = None


class CancelPending(Body):
    order_id: str
    status: Literal["CANCEL_PENDING"]


class CancelAccepted(Body):
    """202 to a cancel the matcher has not confirmed within the wait: poll GET /orders/{order_id}."""

    request_id: str
    order_id: str
    status: Literal["CANCEL_PENDING"]


class CanceledAll(Body):
    request_id: str
    symbol: str
    orders: list[NativeOrder | CancelPending]


class LeverageSet(Body):
    symbol: str
    leverage: int


class RequestOutcome(Body):
    """PENDING carries the id and status only; a decision adds its code, message and order id."""

    request_id: str
    status: Literal["PENDING", "DONE", "REJECTED"]
    code: int | Absent = None
    msg: str | Absent = None
    order_id: str | None = None


# --- /api/v1: account (read models, contracts.messages without type and causation) --------------


class Balance(Body):
    trace_id: str
    ts_ms: int
    account_id: int
    asset: str
    available: Dec
    order_margin: Dec
    position_margin: Dec
    wallet: Dec
    version: int


class Transferred(Body):
    request_id: str
    status: Literal["DONE"]
    balances: list[Balance]


class NativePosition(Body):
    trace_id: str
    ts_ms: int
    account_id: int
    symbol: str
    size: Dec
    entry_price: Dec
    margin: Dec
    leverage: int
    realized_pnl: Dec
    version: int
    cost: Dec
    mark_price: Dec | None
    unrealized_pnl: Dec
    liquidation_price: Dec


class Fill(Body):
    trace_id: str
    ts_ms: int
    account_id: int
    symbol: str
    trade_id: int
    order_id: int
    side: Side
    liquidity: Liquidity
    price: Dec
    quantity: Dec
    fee: Dec
    fee_asset: str
    realized_pnl: Dec


class FundingPayment(Body):
    trace_id: str
    ts_ms: int
    account_id: int
    symbol: str
    funding_time_ms: int
    rate: Dec
    mark_price: Dec
    size: Dec
    amount: Dec
    asset: str


# --- /api/v1: account history from ClickHouse (perpline.audit) -----------------------------------


class Journal(Body):
    journal_id: str
    ref_type: str
    ref_id: str
    symbol: str
    ledger_account: str
    asset: str
    amount: Dec
    trace_id: str
    ts_ms: int


class RepairRecord(Body):
    """A reconciliation repair (recon_repairs; its fields are perpline.recon.repair_columns.SHOWN)."""

    repair_id: str
    rule: str
    asset: str
    account_id: int
    symbol: str
    journal_id: str
    ref_type: str
    break_detail: str
    action: str
    policy: str
    status: str
    actor: str
    journal_ids: list[str]
    voided: list[str]
    instructions: str
    proposed_ms: int
    applied_ms: int
    confirmed_ms: int
    recheck: str


class StatementLine(Body):
    journal_id: str
    ref_type: str
    ref_id: str
    ts_ms: int
    trace_id: str
    change: Dec
    balance: Dec
    repair: RepairRecord | None = None  # on a RECON_REPAIR line: its record (null if not found)


class Statement(Body):
    account_id: int
    asset: str
    from_ms: int
    to_ms: int
    opening: Dec
    lines: list[StatementLine]
    closing: Dec
    agrees_with_ledger: bool
    repairs: list[RepairRecord]  # the records of the repair journals among the lines


class LedgerBalances(Body):
    SPOT: Dec
    ORDER_MARGIN: Dec
    POSITION_MARGIN: Dec


class LedgerAsset(Body):
    balances: LedgerBalances
    fees_paid: Dec
    funding: Dec
    realized_pnl: Dec
    deposits: Dec
    withdrawals: Dec
    liquidation_losses: Dec
    wallet: Dec


LedgerView = dict[str, LedgerAsset]  # by asset


class ViewPosition(Body):
    symbol: str
    size: Dec
    entry_price: Dec
    mark_price: Dec | None
    unrealized_pnl: Dec | None
    margin: Dec
    leverage: int
    liquidation_price: Dec
    realized_pnl: Dec


class StoredOrder(_OrderFields):
    """An order as stored in account_events (contracts.messages.OrderView; the id a number)."""

    order_id: int


class AccountAtInstant(Body):
    account_id: int
    at_ms: int | None
    ledger: LedgerView
    positions: list[ViewPosition]
    open_orders: list[StoredOrder]


class TraceRow(Body):
    ts_ms: int
    source: str
    type: str
    detail: str


# --- /api/v1: market (perpline.api.native, perpline.api.market) ----------------------------------


class NativeBracket(Body):
    notional_cap: Dec
    max_leverage: int
    maint_margin_rate: Dec
    maint_amount: Dec


class NativeInstrument(Body):
    symbol: str
    base_asset: str
    quote_asset: str
    margin_asset: str
    tick_size: Dec
    lot_size: Dec
    min_qty: Dec
    max_qty: Dec
    min_notional: Dec
    max_leverage: int
    default_leverage: int
    maker_fee_rate: Dec
    taker_fee_rate: Dec
    brackets: list[NativeBracket]


class DepthUpdates(Body):
    symbol: str
    after_seq: int
    seq: int
    changes: list[tuple[int, str, Dec, Dec]]  # [seq, side, price, new quantity ("0.000": gone)]


class Mark(Body):
    trace_id: str
    ts_ms: int
    symbol: str
    mark_price: Dec
    index_price: Dec
    last_price: Dec
    mid_price: Dec  # "" when one side of the book is empty
    funding_rate: Dec
    next_funding_ms: int
    index_stale: bool


class FundingRound(Body):
    trace_id: str
    ts_ms: int
    symbol: str
    funding_time_ms: int
    rate: Dec
    mark_price: Dec
    positions: int
    paid: Dec
    received: Dec


class FilterCheck(Body):
    code: int
    name: str


class OrderCost(Body):
    symbol: str
    price: Dec
    quantity: Dec
    notional: Dec
    leverage: int
    initial_margin: Dec
    fee: Dec
    cost: Dec
    filter: FilterCheck | None  # the first filter the order would fail, else null


# --- /api/v1: keys and web sessions --------------------------------------------------------------


class NewKey(Body):
    api_key: str
    api_secret: str
    permissions: list[str]
    label: str


class KeyInfo(Body):
    api_key: str
    permissions: list[str]
    label: str
    created_ms: int
    revoked: bool


class KeyRevoked(Body):
    api_key: str
    revoked: bool


class SignedUp(Body):
    user_id: int
    login: str


class Session(Body):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    expires_s: int
    refresh_token: str
    user_id: int


class LoggedOut(Body):
    ok: bool


class Me(Body):
    user_id: int
    login: str
    expires_s: int


# --- ops -----------------------------------------------------------------------------------------


class ReadinessChecks(Body):
    broker: bool
    clickhouse: bool
    readmodel_caught_up: bool


class Readiness(Body):
    ready: bool
    checks: ReadinessChecks
