"""The API's service layer: every rule the API applies, once, for every surface.

The wire adapters (perpline.api.v1, fapi, market, stream, fstream, listenkey, sessions, ops) parse a
request, call these functions and render what they return; they import no other adapter. The
service returns messages and integer values (ticks, lots, minor units), never wire strings of one
surface: orders (submit-and-await, place, amend, cancel, cancel-all), market (depth, trades, ticker,
mark and premium, candles, funding), account (valuation, balances, income, history), sessions and
keys (users, sessions, API keys, listen keys).
"""
