"""Result codes, grouped by subsystem. Errors are values carrying one of these.

0       ok
1xxx    input validation (API and contracts parsing)
2xxx    accounts and risk (balances, orders, positions)
3xxx    matcher (mirrors perpline.matcher.core's R_* constants; a test keeps them equal)
4xxx    ledger and reconciliation
5xxx    infrastructure (broker, ClickHouse, timeouts)
6xxx    authentication and rate limits
"""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    OK = 0
    # 1xxx input validation
    BAD_NUMBER = 1001
    NEGATIVE_NUMBER = 1002
    TOO_PRECISE = 1003
    NUMBER_TOO_LARGE = 1004
    NOT_POSITIVE = 1005
    UNKNOWN_SYMBOL = 1006
    PRICE_NOT_ON_TICK = 1007
    QTY_NOT_ON_LOT = 1008
    QTY_TOO_SMALL = 1009
    QTY_TOO_LARGE = 1010
    NOTIONAL_TOO_SMALL = 1011
    BAD_SIDE = 1012
    BAD_ORDER_TYPE = 1013
    BAD_TIME_IN_FORCE = 1014
    MALFORMED = 1015
    UNKNOWN_ASSET = 1016
    BAD_LEVERAGE = 1017
    MISSING_FIELD = 1018
    BAD_ACCOUNT = 1019
    DUPLICATE_PARAMETER = 1020  # a parameter given twice in the query, or twice in the body
    # 2xxx accounts and risk
    INSUFFICIENT_BALANCE = 2001
    UNKNOWN_ORDER = 2002
    DUPLICATE_CLIENT_ORDER_ID = 2003
    TOO_MANY_OPEN_ORDERS = 2004
    REDUCE_ONLY_REJECTED = 2005
    NOT_OWNER = 2006
    ORDER_NOT_OPEN = 2008
    PRICE_OUT_OF_BAND = 2009
    LEVERAGE_TOO_LOW_FOR_POSITION = 2010
    STALE_LIQUIDATION = 2011  # the position changed since the liquidation was decided, or one is working
    POSITION_CAP_EXCEEDED = 2012  # position + open orders above the notional cap of the leverage (its bracket)
    SYMBOL_HALTED = 2013  # trading halted by reconciliation (a matcher seq gap): new orders refused, cancels allowed
    # 3xxx matcher
    MATCHER_UNKNOWN_ORDER = 3001
    MATCHER_DUPLICATE_ORDER_ID = 3002
    MATCHER_BAD_PRICE = 3003
    MATCHER_BAD_QTY = 3004
    POST_ONLY_WOULD_TAKE = 3005
    FOK_NOT_FILLABLE = 3006
    NO_LIQUIDITY = 3007
    BOOK_FULL = 3008
    TOO_MANY_LEVELS = 3009
    TOO_MANY_EVENTS = 3010
    MATCHER_NOT_OWNER = 3011
    MATCHER_BAD_INPUT = 3012
    SELF_TRADE_PREVENTED = 3013
    # 31xx matcher shards (start-up refusals, never an order's answer)
    MATCHER_SHARD_INVALID = 3101  # shard index/count out of range, or more shards than `orders` partitions
    MATCHER_SHARD_MISMATCH = 3102  # the data dir or snapshot was written by another shard layout
    MATCHER_WRONG_PARTITION = 3103  # an input from an `orders` partition this shard does not own
    # 4xxx ledger
    JOURNAL_UNBALANCED = 4001
    # 5xxx infrastructure
    TIMEOUT = 5001
    BROKER_UNAVAILABLE = 5002
    CLICKHOUSE_UNAVAILABLE = 5003
    INTERNAL = 5004
    NOT_READY = 5005  # a derived value (e.g. the mark price) is not published yet
    STALE_SNAPSHOT = 5006  # the incremental changes asked for are older than the ones kept
    # 6xxx auth and limits
    UNAUTHORIZED = 6001
    FORBIDDEN = 6002
    RATE_LIMITED = 6003
    REQUEST_TOO_LARGE = 6004
    BAD_SIGNATURE = 6005
    STALE_REQUEST = 6006
    REPLAYED_REQUEST = 6007
    BAD_API_KEY = 6008
    BAD_CREDENTIALS = 6009  # login and password do not match
    LOGIN_TAKEN = 6010
    BAD_TOKEN = 6011  # a session token that is malformed, expired, or whose session ended
    LOGIN_LOCKED = 6012  # too many failed logins for this login or address: wait Retry-After seconds
    UNKNOWN_LISTEN_KEY = 6013  # a user-data stream key that was never issued, expired or was deleted

    @property
    def subsystem(self) -> str:
        return _SUBSYSTEMS.get(int(self) // 1000, "ok")


_SUBSYSTEMS = {1: "input", 2: "accounts", 3: "matcher", 4: "ledger", 5: "infra", 6: "auth"}


class PerplineError(Exception):
    """An error as a value: a code plus a human message. Raised only at edges."""

    def __init__(self, code: Code, msg: str) -> None:
        super().__init__(f"{int(code)} {code.name}: {msg}")
        self.code = code
        self.msg = msg
