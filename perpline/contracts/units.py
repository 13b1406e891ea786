"""Fixed-point units: the one place where decimal strings become integers and back.

- price      -> integer ticks of the instrument's tick size
- quantity   -> integer lots of the instrument's lot size
- amount     -> integer minor units of the asset (USDT: 1e-8)
- rate       -> integer parts per 10^8 (fees, funding, margin ratios)

Parsing is strict: only plain decimal notation is accepted ("123", "-1.5", "0.001").
Exponents, NaN, infinities, spaces, signs where not allowed, more fractional
digits than the unit carries (unless they are zeros), and values beyond a hard
bound are refused with a UnitError carrying a code.
"""

from __future__ import annotations

import re

from perpline.contracts.codes import Code

AMOUNT_DECIMALS = 8
AMOUNT_SCALE = 10**AMOUNT_DECIMALS
RATE_DECIMALS = 8
RATE_SCALE = 10**RATE_DECIMALS
# 10^30 minor units is far beyond any real balance yet fits Decimal(38, 8) in ClickHouse.
MAX_ABS_UNITS = 10**30
MAX_INPUT_CHARS = 64

_DECIMAL_RE = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")  # always fullmatch: `$` would accept a final newline
_UINT_RE = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit() and int() also take '²', '١', ' 1', '1_0'
MAX_UINT = 2**63 - 1


class UnitError(ValueError):
    """A value that cannot be represented exactly in the requested unit."""

    def __init__(self, code: Code, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def parse_fixed(text: str, decimals: int, *, allow_negative: bool = False, what: str = "value") -> int:
    """Parse a decimal string into an integer count of 10^-decimals units, exactly."""
    if not isinstance(text, str):
        raise UnitError(Code.BAD_NUMBER, f"{what} must be a decimal string")
    if len(text) > MAX_INPUT_CHARS:
        raise UnitError(Code.BAD_NUMBER, f"{what} is too long")
    match = _DECIMAL_RE.fullmatch(text)
    if match is None:
        raise UnitError(Code.BAD_NUMBER, f"{what} {text!r} is not a plain decimal number")
    sign, whole, frac = match.group(1), match.group(2), match.group(3) or ""
    if sign and not allow_negative:
        raise UnitError(Code.NEGATIVE_NUMBER, f"{what} {text!r} must not be negative")
    significant = frac.rstrip("0")
    if len(significant) > decimals:
        raise UnitError(Code.TOO_PRECISE, f"{what} {text!r} has more than {decimals} decimal places")
    scale: int = 10**decimals
    units: int = int(whole) * scale + (int(significant.ljust(decimals, "0")) if decimals else 0)
    if units > MAX_ABS_UNITS:
        raise UnitError(Code.NUMBER_TOO_LARGE, f"{what} {text!r} is too large")
    return -units if sign else units


def parse_uint(text: str | None, *, what: str, minimum: int = 0, maximum: int = MAX_UINT) -> int:
    """The one parser of integer parameters (ids, limits, times, leverage): ASCII digits only, no sign,
    no spaces, within [minimum, maximum]. Empty or absent is MISSING_FIELD, anything else BAD_NUMBER
    (Binance -1102 and -1100), so no input reaches int() unchecked."""
    if text is None or text == "":
        raise UnitError(Code.MISSING_FIELD, f"{what} is empty")
    if not isinstance(text, str) or _UINT_RE.fullmatch(text) is None:
        raise UnitError(Code.BAD_NUMBER, f"{what} must be ASCII digits")
    value = int(text)
    if not minimum <= value <= maximum:
        raise UnitError(Code.BAD_NUMBER, f"{what} must be {minimum}..{maximum}")
    return value


def format_fixed(units: int, decimals: int) -> str:
    """Format an integer count of 10^-decimals units as a decimal string with `decimals` places."""
    assert isinstance(units, int) and not isinstance(units, bool), "units must be an int"
    sign = "-" if units < 0 else ""
    magnitude = -units if units < 0 else units
    if decimals == 0:
        return f"{sign}{magnitude}"
    whole, frac = divmod(magnitude, 10**decimals)
    return f"{sign}{whole}.{frac:0{decimals}d}"


def format_exact(units: int, decimals: int, min_decimals: int) -> str:
    """format_fixed, less the trailing zeros beyond `min_decimals` places: an exact value in its
    shortest form that keeps the instrument's own precision ("50000.00", "49923.475")."""
    assert 0 <= min_decimals <= decimals
    text = format_fixed(units, decimals)
    drop = 0
    while drop < decimals - min_decimals and text[-1 - drop] == "0":
        drop += 1
    text = text[:len(text) - drop] if drop else text
    return text.removesuffix(".")


def parse_amount(text: str, *, allow_negative: bool = False, what: str = "amount") -> int:
    return parse_fixed(text, AMOUNT_DECIMALS, allow_negative=allow_negative, what=what)


def format_amount(units: int) -> str:
    return format_fixed(units, AMOUNT_DECIMALS)


def parse_rate(text: str, *, allow_negative: bool = True, what: str = "rate") -> int:
    return parse_fixed(text, RATE_DECIMALS, allow_negative=allow_negative, what=what)


def format_rate(rate_e8: int) -> str:
    return format_fixed(rate_e8, RATE_DECIMALS)


def positive(value: int, what: str) -> int:
    if value <= 0:
        raise UnitError(Code.NOT_POSITIVE, f"{what} must be greater than zero")
    return value


# --- the one rounding rule ------------------------------------------------------------
# Fees and losses round in the exchange's favour: what a user pays rounds up,
# what a user receives rounds down. Journals then balance exactly because each
# posting is derived from one rounded number.


def div_ceil(numerator: int, denominator: int) -> int:
    assert denominator > 0
    return -((-numerator) // denominator)


def div_floor(numerator: int, denominator: int) -> int:
    assert denominator > 0
    return numerator // denominator


def apply_rate_charge(amount_units: int, rate_e8: int) -> int:
    """What a user pays at a rate (fee, margin): rounded up, never below zero for positive inputs."""
    return div_ceil(amount_units * rate_e8, RATE_SCALE)


def apply_rate_credit(amount_units: int, rate_e8: int) -> int:
    """What a user receives at a rate (rebate): rounded down."""
    return div_floor(amount_units * rate_e8, RATE_SCALE)
