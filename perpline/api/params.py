"""Request parameters shared by the wire adapters: strict integers (ASCII digits only)."""

from __future__ import annotations

from pydantic import BeforeValidator

from perpline.contracts.units import UnitError, parse_uint


def _strict_uint(value: object) -> object:
    """Integer parameters given as text (path, query, a quoted JSON number) go through the one strict
    parser (ASCII digits only): pydantic alone would take ' 1', '1_0', '+1', '1.0' and true."""
    if isinstance(value, bool):
        raise ValueError("integer expected, not a boolean")
    if isinstance(value, str):
        try:
            return parse_uint(value, what="integer")
        except UnitError as err:
            raise ValueError(err.msg) from err
    return value


STRICT_UINT = BeforeValidator(_strict_uint)  # Annotated[int, Query(...), STRICT_UINT]: keeps the schema's bounds
