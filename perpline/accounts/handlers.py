"""Command handlers of the accounts processor: (state, command) -> outputs. Pure.

Every command is handled in two phases: a check that reads the state and either refuses (raises
`Reject`, or `UnitError` for a number no instrument accepts) or returns a plan, then an apply that
carries the plan out and has nothing left to refuse. So a refused command changes nothing and emits
nothing but its result, by construction rather than by care in each handler. The rules live in
`requests` (checks), `lifecycle` (orders), `positions` (position maths), `perp` (funding,
liquidation, ADL), `journals` (outputs and journals) and `views` (what the read models are sent).

Idempotency: API commands by request id, settlement legs by (symbol, seq, leg), client order ids per
account; a signed command's nonce is used once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from perpline.accounts import lifecycle as lc
from perpline.accounts import perp, repairs
from perpline.accounts import requests as rq
from perpline.accounts.journals import LOGICAL_ACCOUNT_EVENTS, Ctx, Out, finalize, journal
from perpline.accounts.ledger import platform_account, user_account
from perpline.accounts.memory import DictMemory, Memory, Store
from perpline.accounts.positions import exposure
from perpline.accounts.requests import Reject
from perpline.accounts.state import AccountState, RequestOutcome
from perpline.accounts.views import balance_changed
from perpline.contracts import ids
from perpline.contracts import messages as m
from perpline.contracts.codes import Code
from perpline.contracts.units import UnitError, format_amount

__all__ = ["Out", "Reject", "handle"]

log = logging.getLogger("perpline.accounts")


def handle(state: AccountState, cmd: m.Msg, store: Store | None = None) -> list[Out]:
    """Apply one command to one account's state; returns the messages to publish.

    `store` holds the entries of the account's idempotency memory (the processor's state store;
    the digests that decide a resend are in `state`: perpline.accounts.memory); without one they
    live in `state.local`. A settlement leg that cannot be applied raises (Reject, UnitError,
    IllegalTransition) and has changed nothing.
    """
    cause = getattr(cmd, "request_id", None) or _leg_cause(cmd)
    memory = Memory(state, store if store is not None else DictMemory(state.local))
    ctx = Ctx(cmd.trace_id, cause, cmd.ts_ms, memory)
    leg = LEGS.get(type(cmd))
    if leg is not None:
        plan = leg[0](state, cmd)
        if plan is not None:  # None: applied before
            leg[1](state, plan, ctx)
    else:
        _on_request(state, cmd, ctx)
    return finalize(ctx, state)


def _leg_cause(cmd: m.Msg) -> str:
    if isinstance(cmd, m.FillLeg):
        return ids.fill_leg_id(cmd.symbol, cmd.seq, cmd.liquidity)
    if isinstance(cmd, m.OrderDone):
        return f"done:{cmd.symbol}:{cmd.seq}"
    if isinstance(cmd, m.AmendDone):
        return f"amend:{cmd.symbol}:{cmd.seq}"
    return cmd.causation_id


def _on_request(state: AccountState, cmd: m.Msg, ctx: Ctx) -> None:
    """A request id is decided once, and a signature is used once (exchange-wide: every API replica's
    commands meet here). In that order: a known request id gets its first decision again (a client's
    retry with the same Idempotency-Key, re-signed or not, and a broker redelivery); otherwise a command
    whose nonce was already used is refused with REPLAYED_REQUEST. Either way nothing changes. A refusal
    changes only the request memory (the decision, and the nonce it used up)."""
    request_id: str = cmd.request_id
    seen = ctx.memory.request(request_id)
    if seen is not None:  # a resend: answer again, change nothing
        _result(state, ctx, request_id, seen)
        return
    outcome = _decide(state, cmd, ctx)
    ctx.memory.remember_request(request_id, outcome)
    _result(state, ctx, request_id, outcome)


def _decide(state: AccountState, cmd: m.Msg, ctx: Ctx) -> RequestOutcome:
    """Use the nonce, check, and only if nothing refused apply the plan."""
    try:
        _use_nonce(cmd, ctx)
        phases = REQUESTS.get(type(cmd))
        if phases is None:
            raise Reject(Code.MALFORMED, f"unsupported command {type(cmd).__name__}")
        plan = phases[0](state, cmd, ctx.memory)
    except (Reject, UnitError) as err:
        return RequestOutcome(False, int(err.code), err.msg, None, getattr(cmd, "client_order_id", None))
    if isinstance(plan, RequestOutcome):  # decided by the check alone (a resent order, a stale liquidation)
        return plan
    return phases[1](state, plan, ctx)


def _use_nonce(cmd: m.Msg, ctx: Ctx) -> None:
    """A signed command's nonce is recorded before it is decided: a signature that was refused (say,
    for want of balance) is used up too, as on Binance."""
    if not isinstance(cmd, m.ApiCommand) or not cmd.nonce:
        return
    refused = ctx.memory.use_nonce(cmd.nonce, cmd.signed_ms, cmd.ts_ms)
    if refused is not None:
        raise Reject(*refused)


def _result(state: AccountState, ctx: Ctx, request_id: str, outcome: RequestOutcome) -> None:
    ctx.emit(LOGICAL_ACCOUNT_EVENTS, state.account_id, m.CommandResult(
        **ctx.meta(), request_id=request_id, account_id=state.account_id, ok=outcome.ok, code=outcome.code,
        msg=outcome.msg, order_id=outcome.order_id, client_order_id=outcome.client_order_id,
        order_ids=list(outcome.order_ids)))


# --- wallet and leverage ---------------------------------------------------------------


@dataclass(slots=True)
class WalletPlan:
    asset: str
    amount: int
    cause: str


def _check_deposit(state: AccountState, cmd: m.Deposit, memory: Memory) -> WalletPlan:
    return WalletPlan(rq.asset_of(cmd.asset), rq.positive_amount(cmd.amount), ids.wallet_cause(state.account_id, cmd.request_id))


def _apply_deposit(state: AccountState, plan: WalletPlan, ctx: Ctx) -> RequestOutcome:
    state.balance(plan.asset).available += plan.amount
    journal(ctx, state, "DEPOSIT", plan.cause, plan.asset).transfer(
        platform_account("HOT_WALLET"), user_account(state.account_id, "SPOT"), plan.amount)
    balance_changed(state, ctx, plan.asset)
    return rq.accepted()


def _check_withdraw(state: AccountState, cmd: m.Withdraw, memory: Memory) -> WalletPlan:
    asset, amount = rq.asset_of(cmd.asset), rq.positive_amount(cmd.amount)
    available = rq.available(state, asset)
    if available < amount:
        raise Reject(Code.INSUFFICIENT_BALANCE, f"available {format_amount(available)} < {cmd.amount}")
    return WalletPlan(asset, amount, ids.wallet_cause(state.account_id, cmd.request_id))


def _apply_withdraw(state: AccountState, plan: WalletPlan, ctx: Ctx) -> RequestOutcome:
    state.balance(plan.asset).available -= plan.amount
    journal(ctx, state, "WITHDRAWAL", plan.cause, plan.asset).transfer(
        user_account(state.account_id, "SPOT"), platform_account("HOT_WALLET"), plan.amount)
    balance_changed(state, ctx, plan.asset)
    return rq.accepted()


def _check_set_leverage(state: AccountState, cmd: m.SetLeverage, memory: Memory) -> tuple[str, int]:
    inst = rq.instrument(cmd.symbol)
    if not 1 <= cmd.leverage <= inst.max_leverage:
        raise Reject(Code.BAD_LEVERAGE, f"leverage must be 1..{inst.max_leverage}")
    pos = state.positions.get(inst.symbol)
    if pos is not None and pos.size_lots != 0 and cmd.leverage < pos.leverage:
        raise Reject(Code.LEVERAGE_TOO_LOW_FOR_POSITION, "cannot lower leverage with an open isolated position")
    held = max(exposure(state, inst, "BUY"), exposure(state, inst, "SELL"))
    cap = inst.max_notional_at(cmd.leverage)
    if held > cap:
        raise Reject(Code.POSITION_CAP_EXCEEDED, f"position and open orders reach {format_amount(held)} "
                                                 f"{inst.margin_asset}, above the {format_amount(cap)} allowed at {cmd.leverage}x")
    return inst.symbol, cmd.leverage


def _apply_set_leverage(state: AccountState, plan: tuple[str, int], ctx: Ctx) -> RequestOutcome:
    symbol, leverage = plan
    state.leverage[symbol] = leverage
    return rq.accepted()


# --- the two phases of every command ---------------------------------------------------

Check = Callable[[AccountState, Any, Memory], Any]  # a plan, or a RequestOutcome decided without applying
Apply = Callable[[AccountState, Any, Ctx], RequestOutcome]
REQUESTS: dict[type, tuple[Check, Apply]] = {
    m.Deposit: (_check_deposit, _apply_deposit),
    m.Withdraw: (_check_withdraw, _apply_withdraw),
    m.PlaceOrder: (lc.check_place, lc.apply_place),
    m.CancelOrder: (lc.check_cancel, lc.apply_cancel),
    m.CancelAll: (lc.check_cancel_all, lc.apply_cancel_all),
    m.SetLeverage: (_check_set_leverage, _apply_set_leverage),
    m.AmendOrder: (lc.check_amend, lc.apply_amend),
    m.FundingCharge: (perp.check_funding, perp.apply_funding),
    m.Liquidate: (perp.check_liquidate, perp.apply_liquidate),
    m.Deleverage: (perp.check_deleverage, perp.apply_deleverage),
    m.PostRepair: (repairs.check_repair, repairs.apply_repair),
}
LegCheck = Callable[[AccountState, Any], Any]  # a plan, or None for a leg applied before
LegApply = Callable[[AccountState, Any, Ctx], None]
LEGS: dict[type, tuple[LegCheck, LegApply]] = {
    m.FillLeg: (lc.check_fill, lc.apply_fill_leg),
    m.AmendDone: (lc.check_amend_done, lc.apply_amend_done),
    m.OrderDone: (lc.check_done, lc.apply_done),
}
