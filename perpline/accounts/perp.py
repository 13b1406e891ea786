"""Funding payments and liquidations in the accounts processor (docs/risk.md).

Both arrive from the risk process as commands with a request id, so the request memory makes a
resend a no-op; both move money only through balanced journals:
- FUNDING: a payer's SPOT (then, if that is short, its position margin) -> platform FUNDING_CLEARING;
  a receiver gets FUNDING_CLEARING -> SPOT. Payers round up and receivers down, so FUNDING_CLEARING
  keeps the rounding residue of every round (never negative by rounding).
- LIQUIDATION: the account's orders in the symbol are cancelled and a fee-free reduce-only IOC
  closes the position (above the first bracket: down to the bracket below,
  formulas.liquidation_close_lots) at no worse than its bankruptcy price (later attempts: within 5% of the mark,
  but no further beyond the bankruptcy price than the insurance fund can pay for; the risk process
  says how much in `max_loss`). Each liquidation fill sends what is left of the closed part's margin to the INSURANCE_FUND, or
  takes a deficit from it, so the liquidated account loses exactly the position's margin.

Like every command (accounts.handlers), each is a check that refuses or returns a plan, then an apply
with nothing left to refuse: a liquidation's numbers (bankruptcy price, size, the mark and the fund's
cover) are all read before its first order is marked cut.
"""

from __future__ import annotations

from dataclasses import dataclass

from perpline.accounts import requests as rq
from perpline.accounts.journals import (
    LOGICAL_ACCOUNT_EVENTS,
    LOGICAL_ORDERS,
    LOGICAL_POSITIONS,
    Ctx,
    journal,
    realized_pnl_journal,
    transfer_signed,
)
from perpline.accounts.ledger import platform_account, user_account
from perpline.accounts.memory import Memory
from perpline.accounts.positions import apply_fill, cut_for_liquidation, cut_reduce_only
from perpline.accounts.state import AccountState, OrderState, Position, RequestOutcome
from perpline.accounts.views import balance_changed, order_changed, position_changed
from perpline.contracts import ids
from perpline.contracts import messages as m
from perpline.contracts.codes import Code
from perpline.contracts.instruments import Instrument
from perpline.contracts.units import RATE_SCALE, format_amount, parse_amount
from perpline.risk.formulas import bankruptcy_ticks, liquidation_close_lots

LIQUIDATION_SLIPPAGE_E8 = 5_000_000  # attempts after the first may fill up to 5% beyond the mark


@dataclass(slots=True)
class FundingPlan:
    cmd: m.FundingCharge
    inst: Instrument
    amount: int  # signed: positive the account pays, negative it receives


def check_funding(state: AccountState, cmd: m.FundingCharge, memory: Memory) -> FundingPlan:
    inst = rq.instrument(cmd.symbol)
    return FundingPlan(cmd, inst, parse_amount(cmd.amount, allow_negative=True, what="funding amount"))


def apply_funding(state: AccountState, plan: FundingPlan, ctx: Ctx) -> RequestOutcome:
    cmd, inst, amount = plan.cmd, plan.inst, plan.amount
    asset, acct = inst.margin_asset, state.account_id
    bal = state.balance(asset)
    spot, pos_m, clearing = user_account(acct, "SPOT"), user_account(acct, "POSITION_MARGIN"), platform_account(
        "FUNDING_CLEARING")
    builder = journal(ctx, state, "FUNDING", f"funding:{cmd.symbol}:{cmd.funding_time_ms}:{acct}", asset, inst.symbol)
    paid = amount
    if amount >= 0:
        from_spot = min(amount, max(bal.available, 0))
        pos = state.positions.get(inst.symbol)
        from_margin = min(amount - from_spot, pos.margin if pos is not None else 0)
        bal.available -= from_spot
        bal.position_margin -= from_margin
        if from_margin:
            assert pos is not None
            pos.margin -= from_margin
            pos.version += 1
            position_changed(state, ctx, inst)
        builder.transfer(spot, clearing, from_spot).transfer(pos_m, clearing, from_margin)
        paid = from_spot + from_margin  # an account with nothing left pays what it has (docs/risk.md)
    else:
        bal.available += -amount
        builder.transfer(clearing, spot, -amount)
    ctx.emit(LOGICAL_ACCOUNT_EVENTS, acct, m.FundingApplied(
        **ctx.meta(), account_id=acct, symbol=inst.symbol, funding_time_ms=cmd.funding_time_ms, rate=cmd.rate,
        mark_price=cmd.mark_price, size=cmd.size, amount=format_amount(paid), asset=asset))
    balance_changed(state, ctx, asset)
    return rq.accepted()


@dataclass(slots=True)
class LiquidationPlan:
    cmd: m.Liquidate
    inst: Instrument
    pos: Position
    side: str
    price_ticks: int
    qty_lots: int


def check_liquidate(state: AccountState, cmd: m.Liquidate, memory: Memory) -> LiquidationPlan | RequestOutcome:
    inst = rq.instrument(cmd.symbol)
    pos = state.positions.get(inst.symbol)
    if pos is None or pos.size_lots == 0 or pos.version != cmd.position_version:
        return RequestOutcome(False, int(Code.STALE_LIQUIDATION), "the position changed since; nothing to do", None, None)
    if any(o.liquidation for o in state.orders.values() if o.symbol == inst.symbol):
        return RequestOutcome(False, int(Code.STALE_LIQUIDATION), "a liquidation order is already working", None, None)
    side = "SELL" if pos.size_lots > 0 else "BUY"
    price_ticks = bankruptcy_ticks(inst, pos.size_lots, pos.cost, pos.margin)
    qty_lots = liquidation_close_lots(inst, pos.size_lots, pos.cost)
    if cmd.attempt > 0:  # the book did not reach the bankruptcy price: close near the mark, the fund covers
        price_ticks = _fund_backed_price(inst, side, price_ticks, qty_lots, cmd)
    return LiquidationPlan(cmd, inst, pos, side, price_ticks, qty_lots)


def apply_liquidate(state: AccountState, plan: LiquidationPlan, ctx: Ctx) -> RequestOutcome:
    cmd, inst, pos, side = plan.cmd, plan.inst, plan.pos, plan.side
    cut_for_liquidation(state, ctx, inst)
    state.order_seq += 1
    client_id = ids.liquidation_client_id(pos.version, cmd.attempt)
    order = OrderState(
        order_id=ids.order_id_for(state.account_id, state.order_seq), client_order_id=client_id, symbol=inst.symbol,
        side=side, order_type="LIMIT", time_in_force="IOC", price_ticks=plan.price_ticks, qty_lots=plan.qty_lots,
        leaves_lots=plan.qty_lots, leverage=pos.leverage or inst.default_leverage, margin_frozen=0, fee_frozen=0,
        created_ms=ctx.ts_ms, updated_ms=ctx.ts_ms, reduce_only=True, liquidation=True)
    state.orders[order.order_id] = order
    order_changed(state, ctx, inst, order)
    ctx.emit(LOGICAL_ORDERS, inst.symbol, m.NewOrder(
        **ctx.meta(), order_id=order.order_id, account_id=state.account_id, symbol=inst.symbol, side=side,  # type: ignore[arg-type]
        order_type="LIMIT", time_in_force="IOC", price=inst.format_price(plan.price_ticks),
        quantity=inst.format_qty(plan.qty_lots), client_order_id=client_id, stp="EXPIRE_TAKER", reduce_only=True))
    return rq.accepted(order.order_id, client_id)


def _fund_backed_price(inst: Instrument, side: str, bankrupt_ticks: int, qty_lots: int, cmd: m.Liquidate) -> int:
    """A later attempt's limit: within LIQUIDATION_SLIPPAGE_E8 of the mark, but never so far beyond the
    bankruptcy price that the loss (the distance x size) exceeds what the insurance fund may pay."""
    mark = inst.parse_price(cmd.mark_price)
    slip = mark * LIQUIDATION_SLIPPAGE_E8 // RATE_SCALE
    near_mark = max(1, mark - slip) if side == "SELL" else mark + slip
    if not cmd.max_loss:
        return near_mark
    cover_ticks = parse_amount(cmd.max_loss) // (qty_lots * inst.amount_per_tick_lot)
    if side == "SELL":
        return max(near_mark, bankrupt_ticks - cover_ticks, 1)
    return min(near_mark, bankrupt_ticks + cover_ticks)


@dataclass(slots=True)
class DeleveragePlan:
    cmd: m.Deleverage
    inst: Instrument
    price_ticks: int
    qty_lots: int


def check_deleverage(state: AccountState, cmd: m.Deleverage, memory: Memory) -> DeleveragePlan:
    inst = rq.instrument(cmd.symbol)
    return DeleveragePlan(cmd, inst, inst.parse_price(cmd.price), inst.parse_qty(cmd.quantity))


def apply_deleverage(state: AccountState, plan: DeleveragePlan, ctx: Ctx) -> RequestOutcome:
    """One side of an ADL trade, applied like a fee-free fill at the bankruptcy price: the bankrupt side
    closes (what its margin + PnL leaves goes to or comes from the insurance fund, as a liquidation); the
    counterparty reduces its position and realises its PnL at that price (beyond its size it opens the
    other way, taking margin). Never refused once its numbers parse: the other side is applied too, so
    open interest stays equal."""
    cmd, inst = plan.cmd, plan.inst
    pos = state.positions.setdefault(inst.symbol, Position(symbol=inst.symbol))
    leverage = pos.leverage or state.leverage.get(inst.symbol, inst.default_leverage)
    closed_margin, pnl, new_margin = apply_fill(inst, pos, leverage, cmd.side, plan.price_ticks, plan.qty_lots)
    asset, acct = inst.margin_asset, state.account_id
    bal = state.balance(asset)
    bal.position_margin += new_margin - closed_margin
    bal.available += closed_margin + pnl - new_margin
    spot, pos_m = user_account(acct, "SPOT"), user_account(acct, "POSITION_MARGIN")
    cause = f"adl:{cmd.adl_id}:{acct}"
    journal(ctx, state, "ADL", cause, asset, inst.symbol).transfer(pos_m, spot, closed_margin).transfer(
        spot, pos_m, new_margin)
    realized_pnl_journal(ctx, state, cause, asset, inst.symbol, pnl)
    if cmd.bankrupt:
        _to_insurance_fund(state, ctx, asset, inst.symbol, cause, closed_margin + pnl)
    balance_changed(state, ctx, asset)
    position_changed(state, ctx, inst)
    cut_reduce_only(state, ctx, inst)
    return rq.accepted()


def settle_liquidation_fill(state: AccountState, ctx: Ctx, inst: Instrument, leg: m.FillLeg, order: OrderState,
                            closed_margin: int, pnl: int) -> None:
    """After a liquidation fill was settled like any fill: move what the closed part returned to the
    account (its margin + PnL) to the insurance fund, or cover it from the fund when negative."""
    asset = inst.margin_asset
    residual = closed_margin + pnl
    _to_insurance_fund(state, ctx, asset, leg.symbol, ids.fill_leg_id(leg.symbol, leg.seq, leg.liquidity), residual)
    ctx.emit(LOGICAL_ACCOUNT_EVENTS, state.account_id, m.LiquidationDone(
        **ctx.meta(), account_id=state.account_id, symbol=leg.symbol, order_id=order.order_id,
        insurance_fund_delta=format_amount(residual), asset=asset))


def _to_insurance_fund(state: AccountState, ctx: Ctx, asset: str, symbol: str, cause: str, residual: int) -> None:
    """LIQUIDATION: what a closed liquidated position returned to the account (margin + PnL) goes to the
    insurance fund, or the fund covers it when negative; the account keeps nothing of it either way."""
    state.balance(asset).available -= residual
    spot, fund = user_account(state.account_id, "SPOT"), platform_account("INSURANCE_FUND")
    transfer_signed(journal(ctx, state, "LIQUIDATION", cause, asset, symbol), spot, fund, residual)
    ctx.emit(LOGICAL_POSITIONS, symbol, m.InsuranceFundMoved(
        **ctx.meta(), account_id=state.account_id, symbol=symbol, asset=asset, amount=format_amount(residual),
        cause=cause))
