"""The read model's parts (perpline.api.reads): what a frame or a request costs does not grow with an
account's history or the number of accounts, and the indexes kept for that follow every change.

The cost is counted, never timed (the machines are shared and loaded): the collection that must not be
walked is swapped for a copy that counts its walks or the elements they hand out."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Any

from perpline.api import snapshot, stream
from perpline.api.deps import ApiDeps
from perpline.api.readmodel import ReadModel
from perpline.api.views import AccountView
from perpline.contracts import messages as m
from perpline.matcher import convert
from perpline.matcher.loader import load_core
from tests.unit.test_depth_updates import flow

SYM = "BTCUSDT-PERP"
META = {"trace_id": "t", "causation_id": "c", "ts_ms": 1}


def order(account_id: int, order_id: int, status: str) -> m.OrderChanged:
    view = m.OrderView(order_id=order_id, client_order_id=f"c{order_id}", account_id=account_id, symbol=SYM,
                       side="BUY", order_type="LIMIT", time_in_force="GTC", price="50000.0", quantity="0.010",
                       filled="0", avg_price="0", status=status, reduce_only=False, created_ms=order_id,  # type: ignore[arg-type]
                       updated_ms=order_id)
    return m.OrderChanged(**META, account_id=account_id, order=view)


def position(account_id: int, size: str, version: int, symbol: str = SYM) -> m.PositionChanged:
    return m.PositionChanged(**META, account_id=account_id, symbol=symbol, size=size, entry_price="50000.0",
                             margin="1", leverage=10, realized_pnl="0", version=version)


def fill(account_id: int, trade_id: int) -> m.FillRecorded:
    return m.FillRecorded(**META, account_id=account_id, symbol=SYM, trade_id=trade_id, order_id=trade_id, side="BUY",
                          liquidity="TAKER", price="50000.0", quantity="0.010", fee="0.01", fee_asset="USDT",
                          realized_pnl="0")


def with_history(model: ReadModel, account_id: int, n: int) -> None:
    """`n` closed orders and `n` fills, one open order, a balance and a position."""
    for i in range(1, n + 1):
        model.apply("account.events", order(account_id, i, "CANCELED"))
        model.apply("account.events", fill(account_id, i))
    model.apply("account.events", order(account_id, n + 1, "NEW"))
    model.apply("account.events", m.BalanceChanged(**META, account_id=account_id, asset="USDT", available="1",
                                                   order_margin="0", position_margin="1", wallet="2", version=1))
    model.apply("account.events", position(account_id, "0.010", 1))


class Walked(OrderedDict):  # type: ignore[type-arg]
    """An ordered dict that counts its walks (iterating it, its keys, values or items, in either
    direction); a lookup by key is not a walk. Counting the work, not timing it, keeps the tests exact
    on a loaded machine."""

    walks = 0

    def __repr__(self) -> str:
        return f"<{len(self)} entries, walked {self.walks} times>"

    def _walked(self) -> None:
        self.walks += 1

    def __iter__(self) -> Iterator[Any]:
        self._walked()
        return super().__iter__()

    def __reversed__(self) -> Iterator[Any]:
        self._walked()
        return super().__reversed__()

    def keys(self) -> Any:
        self._walked()
        return super().keys()

    def values(self) -> Any:
        self._walked()
        return super().values()

    def items(self) -> Any:
        self._walked()
        return super().items()


class CountedDeque(deque):  # type: ignore[type-arg]
    """A deque that counts the items its walks hand out (from either end): the elements touched."""

    touched = 0

    def __repr__(self) -> str:
        return f"<{len(self)} entries, {self.touched} touched>"

    def _counted(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            self.touched += 1
            yield item

    def __iter__(self) -> Iterator[Any]:
        return self._counted(super().__iter__())

    def __reversed__(self) -> Iterator[Any]:
        return self._counted(super().__reversed__())


def watched_history(view: AccountView) -> tuple[Walked, CountedDeque]:
    """Swap the view's closed orders and fills (its unbounded-looking parts) for counting copies."""
    view.closed_orders = Walked(view.closed_orders)
    view.fills = CountedDeque(view.fills, maxlen=view.fills.maxlen)
    return view.closed_orders, view.fills


def test_an_account_frame_costs_the_same_after_ten_thousand_closed_orders_and_fills() -> None:
    """A frame of the account stream reads balances, positions and open orders only: before, each frame
    copied the account's whole view (up to 10,000 closed orders and fills) under the read model's lock."""
    model = ReadModel("unused:1", {})
    with_history(model, 1, 10)
    with_history(model, 2, 10_000)
    deps = ApiDeps(bootstrap="unused:1", topics={}, wait_s=0.1)
    deps.readmodel = model
    small = stream.account_frame(deps, 1)
    large = stream.account_frame(deps, 2)
    assert len(small["open_orders"]) == len(large["open_orders"]) == 1 and large["balances"] and large["positions"]
    closed, fills = watched_history(model.accounts._views[2])
    assert stream.account_frame(deps, 2) | {"ts_ms": 0} == large | {"ts_ms": 0}
    assert (closed.walks, fills.touched) == (0, 0)  # not one of the 10,000 closed orders or fills was read


def test_open_positions_come_from_an_index_that_follows_every_change() -> None:
    model = ReadModel("unused:1", {})
    for acct in range(1, 20_001):  # many accounts, none in the symbol asked about
        model.apply("account.events", position(acct, "0.010", 1, "ETHUSDT-PERP"))
    model.apply("account.events", position(7, "0.010", 1))
    model.apply("account.events", position(8, "-0.020", 1))
    assert sorted(p.account_id for p in model.open_positions(SYM)) == [7, 8]
    model.apply("account.events", position(7, "0", 2))  # closed
    model.apply("account.events", position(8, "-0.010", 0))  # a redelivered older version: ignored
    assert [(p.account_id, p.size) for p in model.open_positions(SYM)] == [(8, "-0.020")]
    model.apply("account.events", position(7, "0.030", 3))  # reopened
    assert sorted(p.account_id for p in model.open_positions(SYM)) == [7, 8]
    assert [model.snapshot_account(a).positions[SYM] for a in (7, 8)] == \
        sorted(model.open_positions(SYM), key=lambda p: p.account_id)  # the index shows what the views show

    restored = ReadModel("unused:1", {})
    restored.restore(snapshot.restore(snapshot.decode(snapshot.encode(snapshot.capture(model))), 1000))
    assert sorted((p.account_id, p.size) for p in restored.open_positions(SYM)) == [(7, "0.030"), (8, "-0.020")]
    assert len(restored.open_positions("ETHUSDT-PERP")) == 20_000
    views = model.accounts._views = Walked(model.accounts._views)
    assert sorted(p.account_id for p in model.open_positions(SYM)) == [7, 8]
    assert views.walks == 0  # the 20,001 accounts were not walked to find the two


def test_a_client_order_id_is_found_without_walking_the_closed_orders() -> None:
    model = ReadModel("unused:1", {})
    with_history(model, 3, 10_000)
    assert model.find_client_order(3, "c10001") is not None and model.find_client_order(3, "c10001").status == "NEW"  # type: ignore[union-attr]
    assert model.find_client_order(3, "c1").status == "CANCELED"  # type: ignore[union-attr]
    assert model.find_client_order(3, "nope") is None and model.find_client_order(4, "c1") is None
    closed, _ = watched_history(model.accounts._views[3])
    assert model.find_client_order(3, "missing") is None
    assert model.find_client_order(3, "c2").order_id == 2  # type: ignore[union-attr]
    assert closed.walks == 0  # found (or not) by the index, not by walking the 10,000 closed orders
    restored = ReadModel("unused:1", {})
    restored.restore(snapshot.restore(snapshot.decode(snapshot.encode(snapshot.capture(model))), 1000))
    assert restored.find_client_order(3, "c5") == model.find_client_order(3, "c5") is not None


def test_depth_changes_after_a_recent_seq_walk_only_the_new_changes() -> None:
    core = load_core(pure=True)
    engine = core.Engine(SYM, core.EngineConfig())
    model = ReadModel("unused:1", {})
    for cmd in flow(3000, seed=3):
        for ev in convert.apply(engine, core, cmd):
            model.apply("matcher.events", ev)
    seq = model.book_seq(SYM)
    found = model.depth_changes(SYM, seq - 1)
    assert found is not None and found[0] == seq and all(c[0] == seq for c in found[1])
    book = model.books._books[SYM]
    changes = book.changes = CountedDeque(book.changes, maxlen=book.changes.maxlen)
    assert len(changes) > 1000
    assert model.depth_changes(SYM, seq) == (seq, [])
    assert changes.touched == 1  # the newest change is not new: nothing older is walked
    changes.touched = 0
    assert model.depth_changes(SYM, seq - 1) == found
    assert changes.touched == len(found[1]) + 1  # the new changes and the one that ends the walk
