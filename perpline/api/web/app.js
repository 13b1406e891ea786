// perpline web terminal: plain JavaScript on the native API (/api/v1, Bearer sessions), no build step.
// Amounts stay the server's decimal strings; numbers are parsed only to draw (chart, depth bars).
// The market (chart, book, trades, ticker, mark, funding) is public: anyone sees it live; the order
// form and the account panels ask for a login.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { symbol: null, instruments: [], series: null, volume: null, chart: null, interval: "1m",
                etags: {}, cache: {}, nextFunding: 0 };

// --- session ---------------------------------------------------------------------------------------
const session = {
  get access() { return localStorage.getItem("access_token"); },
  get refresh() { return localStorage.getItem("refresh_token"); },
  save(tokens) {
    localStorage.setItem("access_token", tokens.access_token);
    localStorage.setItem("refresh_token", tokens.refresh_token);
    localStorage.setItem("user_id", String(tokens.user_id));
  },
  clear() { ["access_token", "refresh_token", "user_id"].forEach((k) => localStorage.removeItem(k)); },
};

async function api(method, path, body, { auth = true, retry = true } = {}) {
  const headers = {};
  if (auth && session.access) headers.Authorization = `Bearer ${session.access}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method === "GET" && state.etags[path]) headers["If-None-Match"] = state.etags[path];
  if (method !== "GET") headers["Idempotency-Key"] = crypto.randomUUID().replace(/-/g, "").slice(0, 32);
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 304) return state.cache[path];
  if (res.status === 401 && auth && retry && session.refresh) {
    if (await renew()) return api(method, path, body, { auth, retry: false });
    session.clear(); route();
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) { const err = new Error(data.msg || res.statusText); err.code = data.code; err.status = res.status; throw err; }
  if (method === "GET" && res.headers.get("ETag")) { state.etags[path] = res.headers.get("ETag"); state.cache[path] = data; }
  return data;
}

// A refresh token works once (the server lets exactly one refresh win), so the calls that found the
// access token expired share one refresh; a refresh lost to another tab counts if that tab saved new tokens.
let renewing = null;
function renew() {
  if (!renewing) {
    const used = session.refresh;
    renewing = fetch("/api/v1/auth/refresh", { method: "POST", headers: { "Content-Type": "application/json" },
                                               body: JSON.stringify({ refresh_token: used }) })
      .then(async (res) => { if (res.ok) session.save(await res.json()); return res.ok || session.refresh !== used; })
      .catch(() => false)
      .finally(() => { renewing = null; });
  }
  return renewing;
}

function say(id, text, ok) { const el = $(id); el.textContent = text; el.className = `msg ${ok ? "ok" : "error"}`; }
function errorText(err) { return err.code ? `${err.message} (code ${err.code})` : err.message; }

async function authenticate(kind) {
  const body = { login: $("login").value.trim(), password: $("password").value };
  try {
    if (kind === "signup") await api("POST", "/api/v1/auth/signup", body, { auth: false });
    session.save(await api("POST", "/api/v1/auth/login", body, { auth: false }));
    say("login-msg", "", true);
    route();  // the visitor stays where the login was asked: the trade page or a private one
  } catch (err) { say("login-msg", errorText(err), false); }
}

// --- views -----------------------------------------------------------------------------------------
const VIEWS = ["login", "trade", "account", "wallet", "keys"];
const PRIVATE = ["account", "wallet", "keys"];  // pages with nothing to show without a session
function currentView() {
  const view = location.hash.replace("#/", "") || "trade";
  return VIEWS.includes(view) && view !== "login" ? view : "trade";
}

function route() {
  const view = currentView();
  const anonymous = !session.access;
  const shown = anonymous && PRIVATE.includes(view) ? "login" : view;
  VIEWS.forEach((v) => { $(`view-${v}`).hidden = v !== shown; const a = $(`nav-${v}`); if (a) a.classList.toggle("active", v === view); });
  placeLogin(anonymous && view === "trade");
  $("logout").hidden = anonymous;
  $("open-login").hidden = !anonymous;
  $("cancel-all").hidden = anonymous;
  $("who").textContent = anonymous ? "" : `account ${localStorage.getItem("user_id")}`;
  if (anonymous) { closeAccountStream(); askLogin(); }
  if (view === "trade") ensureChart();
  refresh();
}

// The one login box: on the trade page it takes the order form's place (the market stays in view);
// on a private page it is the page.
function placeLogin(inTrade) {
  const box = $("view-login");
  const home = inTrade ? document.querySelector("#view-trade .grid") : document.querySelector("main");
  if (box.parentElement !== home) home.prepend(box);
  box.classList.toggle("in-trade", inTrade);
  if (inTrade) box.hidden = false;
  document.querySelector("#view-trade .form-card").hidden = inTrade;
}

function askLogin() {
  const prompt = (what) => [`<span class="ask-login">Log in to see your ${what}</span> <button type="button" data-login="1">Log in</button>`];
  rows("positions", [""], [prompt("positions")]);
  rows("open-orders", [""], [prompt("open orders")]);
}

function focusLogin() {
  $("view-login").scrollIntoView({ block: "center" });
  $("login").focus();
}

function rows(table, header, items, fixedRows = 0) {
  // fixedRows: the table always has that many body rows (blank ones pad it), so its height never jumps
  const head = `<tr>${header.map((h) => `<th>${h}</th>`).join("")}</tr>`;
  const blank = `<tr>${header.map(() => "<td>&nbsp;</td>").join("")}</tr>`;
  $(table).innerHTML = head + items.map((cells) => `<tr>${cells.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")
    + blank.repeat(Math.max(0, fixedRows - items.length));
}
// USDT amounts in tables: 2 decimals, rounded half away from zero (as exchanges and spreadsheets show
// them) on the decimal string itself, never through a float; the exact server value on hover.
const MONEY_DECIMALS = 2;
function roundMoney(value) {
  const m = /^([+-]?)(\d+)(?:\.(\d*))?$/.exec(String(value ?? "").trim());
  if (!m) return null;
  const [, sign, whole, frac = ""] = m;
  let units = BigInt(whole + frac.padEnd(MONEY_DECIMALS, "0").slice(0, MONEY_DECIMALS));
  if ((frac[MONEY_DECIMALS] || "0") >= "5") units += 1n;
  const digits = units.toString().padStart(MONEY_DECIMALS + 1, "0");
  const shown = `${digits.slice(0, -MONEY_DECIMALS)}.${digits.slice(-MONEY_DECIMALS)}`;
  return sign === "-" && units !== 0n ? `-${shown}` : shown;
}
const money = (value) => {
  const shown = roundMoney(value);
  return shown === null ? esc(value) : `<span class="money" title="${esc(value)}">${shown}</span>`;
};
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
const time = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
const BOOK_LEVELS = 10, TRADE_ROWS = 16;

// --- market ----------------------------------------------------------------------------------------
function ensureChart() {
  if (state.chart || !window.LightweightCharts) return;
  const dark = document.documentElement.dataset.theme === "dark";
  state.chart = LightweightCharts.createChart($("chart"), { autoSize: true, layout: { background: { color: "transparent" },
    textColor: dark ? "#e6edf3" : "#1b1f24" }, grid: { vertLines: { visible: false }, horzLines: { visible: false } },
    timeScale: { timeVisible: true } });
  state.series = state.chart.addCandlestickSeries();
  state.volume = state.chart.addHistogramSeries({ priceScaleId: "", priceFormat: { type: "volume" } });
  state.volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
}

// --- market stream: book, trades and mark pushed over a websocket; REST polling takes over when it is down
const stream = { ws: null, symbol: null, live: false, frames: 0 };

function connectStream() {
  if (document.hidden || !state.symbol || (stream.ws && stream.symbol === state.symbol)) return;
  closeStream();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/api/v1/market/stream?symbol=${state.symbol}&levels=${BOOK_LEVELS}&trades=${TRADE_ROWS}`);
  stream.ws = ws; stream.symbol = state.symbol;
  ws.onmessage = (ev) => {
    const f = JSON.parse(ev.data);
    if (f.type !== "market" || f.symbol !== state.symbol || stream.ws !== ws) return;
    stream.live = true; stream.frames += 1;
    renderBook(f); renderTrades(f.trades); if (f.mark) renderMark(f.mark);
  };
  ws.onclose = () => { if (stream.ws === ws) { stream.ws = null; stream.live = false; setTimeout(connectStream, 3000); } };
}

function closeStream() {
  const ws = stream.ws;
  stream.ws = null; stream.live = false;
  if (ws) ws.close();
}

// --- account stream: balances, positions and open orders pushed for the session; polled while it is down
const accountStream = { ws: null, live: false, frames: 0, last: null };

function connectAccountStream() {
  if (document.hidden || !session.access || accountStream.ws) return;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/api/v1/account/stream`);
  accountStream.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ token: session.access }));
  ws.onmessage = (ev) => {
    const f = JSON.parse(ev.data);
    if (f.type !== "account" || accountStream.ws !== ws) return;
    accountStream.live = true; accountStream.frames += 1; accountStream.last = f;
    renderTrading(f.positions, f.open_orders.filter((o) => o.symbol === state.symbol));
  };
  // closed by the server when the session ends or its token expires: polling refreshes the token meanwhile
  ws.onclose = () => { if (accountStream.ws === ws) { accountStream.ws = null; accountStream.live = false; setTimeout(connectAccountStream, 3000); } };
}

function closeAccountStream() {
  const ws = accountStream.ws;
  accountStream.ws = null; accountStream.live = false;
  if (ws) ws.close();
}

function renderBook(book) {
  const widest = Math.max(1, ...[...book.bids, ...book.asks].map((l) => Number(l[1])));  // bar widths only
  const level = (l) => `<tr><td><span>${l[0]}</span></td><td><div class="bar" style="width:${(100 * Number(l[1]) / widest).toFixed(1)}%"></div><span>${l[1]}</span></td></tr>`;
  const blank = (n) => "<tr><td><span>&nbsp;</span></td><td></td></tr>".repeat(Math.max(0, BOOK_LEVELS - n));
  $("asks").innerHTML = blank(book.asks.length) + book.asks.slice().reverse().map(level).join("");  // best ask next to the spread
  $("bids").innerHTML = book.bids.map(level).join("") + blank(book.bids.length);
  $("spread").textContent = book.bids.length && book.asks.length ? `spread ${(Number(book.asks[0][0]) - Number(book.bids[0][0])).toFixed(2)}` : "no spread";
}

function renderTrades(trades) {
  rows("trades", ["Price", "Qty", "Time"], trades.slice().reverse().map((t) =>
    [`<span class="${t.taker_side === "BUY" ? "buy" : "sell"}">${t.price}</span>`, t.quantity, time(t.ts_ms)]), TRADE_ROWS);
}

function renderMark(mark) {
  $("t-mark").textContent = mark.mark_price; $("t-index").textContent = mark.index_price;
  $("t-funding").textContent = `${(mark.funding_rate * 100).toFixed(4)}%`; state.nextFunding = mark.next_funding_ms; tickCountdown();
}

async function loadMarket() {
  const sym = state.symbol; const inst = state.instruments.find((i) => i.symbol === sym);
  if (!inst) return;
  connectStream();
  const binance = sym.replace("-PERP", "");
  const pushed = stream.live;  // the stream brings book, trades and mark: poll only what it does not
  const [book, trades, ticker, klines] = await Promise.all([
    pushed ? null : api("GET", `/api/v1/market/depth?symbol=${sym}&limit=${BOOK_LEVELS}`, undefined, { auth: false }),
    pushed ? null : api("GET", `/api/v1/market/trades?symbol=${sym}&limit=${TRADE_ROWS}`, undefined, { auth: false }),
    api("GET", `/fapi/v1/ticker/24hr?symbol=${binance}`, undefined, { auth: false }),
    api("GET", `/fapi/v1/klines?symbol=${binance}&interval=${state.interval}&limit=300`, undefined, { auth: false }),
  ]);
  if (book) renderBook(book);
  if (trades) renderTrades(trades);
  $("t-last").textContent = ticker.lastPrice; $("t-change").textContent = `${ticker.priceChangePercent}%`;
  $("t-high").textContent = ticker.highPrice; $("t-low").textContent = ticker.lowPrice; $("t-volume").textContent = ticker.volume;
  if (state.series) {
    state.series.setData(klines.map((k) => ({ time: k[0] / 1000, open: Number(k[1]), high: Number(k[2]), low: Number(k[3]), close: Number(k[4]) })));
    state.volume.setData(klines.map((k) => ({ time: k[0] / 1000, value: Number(k[5]), color: Number(k[4]) >= Number(k[1]) ? "#3fb95066" : "#f8514966" })));
  }
  const k = klines[klines.length - 1];  // the forming candle, in the server's own decimal strings
  $("chart-legend").textContent = k ? `${new Date(k[0]).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })} O ${k[1]} H ${k[2]} L ${k[3]} C ${k[4]} V ${k[5]} (${k[8]} trades)` : "no trades yet";
  if (pushed) return;
  try {
    renderMark(await api("GET", `/api/v1/market/mark?symbol=${sym}`, undefined, { auth: false }));
  } catch (err) { $("t-mark").textContent = "-"; }
}

// --- account -----------------------------------------------------------------------------------------
async function loadTrading() {
  connectAccountStream();
  const f = accountStream.last;
  if (accountStream.live && f) {  // pushed; drawn again here for a symbol just switched to
    renderTrading(f.positions, f.open_orders.filter((o) => o.symbol === state.symbol));
    return;
  }
  const [positions, open] = await Promise.all([api("GET", "/api/v1/account/positions"), api("GET", `/api/v1/orders?symbol=${state.symbol}`)]);
  renderTrading(positions, open);
}

function renderTrading(positions, open) {
  rows("positions", ["Symbol", "Size", "Entry", "Mark", "Unrealised PnL", "Margin", "Liq. price", "Leverage", "Realised PnL", ""], positions.filter((p) => Number(p.size) !== 0).map((p) =>
    [p.symbol, p.size, p.entry_price, p.mark_price ?? "-", money(p.unrealized_pnl), money(p.margin), p.liquidation_price, p.leverage, money(p.realized_pnl),
     `<button type="button" data-close="${p.symbol}" data-size="${p.size}">Close</button>`]));
  rows("open-orders", ["Id", "Side", "Type", "Price", "Qty", "Filled", "Status", ""], open.map((o) =>
    [o.order_id, `<span class="${o.side === "BUY" ? "buy" : "sell"}">${o.side}</span>`, `${o.order_type} ${o.time_in_force}`,
     o.price ?? "", o.quantity, o.filled, o.status, `<button type="button" data-cancel="${o.order_id}">Cancel</button>`]));
}

async function loadAccount() {
  const [balances, history, fills, funding] = await Promise.all([api("GET", "/api/v1/account/balances"),
    api("GET", "/api/v1/orders?status=all"), api("GET", "/api/v1/account/trades"), api("GET", "/api/v1/account/funding")]);
  rows("balances", ["Asset", "Available", "Order margin", "Position margin", "Wallet"], balances.map((b) =>
    b.asset === "USDT" ? [b.asset, money(b.available), money(b.order_margin), money(b.position_margin), money(b.wallet)]
      : [b.asset, b.available, b.order_margin, b.position_margin, b.wallet]));
  rows("order-history", ["Id", "Symbol", "Side", "Price", "Qty", "Filled", "Status"], history.slice(-50).reverse().map((o) =>
    [o.order_id, o.symbol, o.side, o.price ?? "", o.quantity, o.filled, o.status]));
  rows("trade-history", ["Time", "Symbol", "Side", "Price", "Qty", "Fee", "PnL"], fills.slice(-50).reverse().map((t) =>
    [time(t.ts_ms), t.symbol, t.side, t.price, t.quantity, t.fee_asset === "USDT" ? money(t.fee) : esc(t.fee), money(t.realized_pnl)]));
  rows("funding-history", ["Time", "Symbol", "Rate", "Size", "Paid"], funding.slice(-50).reverse().map((f) =>
    [time(f.funding_time_ms), f.symbol, f.rate, f.size, money(f.amount)]));
}

async function loadKeys() {
  const keys = await api("GET", "/api/v1/keys");
  rows("keys", ["Key", "Label", "Permissions", "Revoked", ""], keys.map((k) =>
    [esc(k.api_key.slice(0, 12)) + "…", esc(k.label), k.permissions.join(", "), k.revoked ? "yes" : "",
     k.revoked ? "" : `<button type="button" data-revoke="${esc(k.api_key)}">Revoke</button>`]));
}

async function refresh() {
  if (document.hidden) return;  // an idle, hidden tab costs nothing
  try {
    const view = currentView();
    if (view === "trade") await Promise.all([loadMarket(), session.access ? loadTrading() : null]);
    else if (!session.access) return;  // a private page shows the login box
    else if (view === "account") await loadAccount();
    else if (view === "keys") await loadKeys();
  } catch (err) { console.warn("refresh", err.message); }
}

// --- actions -----------------------------------------------------------------------------------------
async function preview() {
  // the server's own rules (the accounts processor's margin formula), never a copy in JavaScript
  const price = $("o-price").value.trim() || $("t-mark").textContent;
  const size = $("o-qty").value.trim();
  if (!size || !price || price === "-") { $("o-cost").textContent = ""; return null; }
  const unit = $("o-unit").value === "quote" ? "quote" : "quantity";
  try {
    const c = await api("GET", `/api/v1/market/order-cost?symbol=${state.symbol}&price=${encodeURIComponent(price)}&leverage=${Number($("o-lev").value)}&${unit}=${encodeURIComponent(size)}`, undefined, { auth: false });
    $("o-cost").className = c.filter ? "msg error" : "msg";
    $("o-cost").textContent = `${c.quantity} contracts, notional ${c.notional}, margin ${c.initial_margin} + fee ${c.fee} = ${c.cost} USDT${c.filter ? ` (refused: ${c.filter.name})` : ""}`;
    return c;
  } catch (err) { $("o-cost").className = "msg error"; $("o-cost").textContent = errorText(err); return null; }
}

async function placeOrder(ev) {
  ev.preventDefault();
  const side = document.querySelector("input[name=side]:checked").value;
  const type = $("o-type").value;
  let quantity = $("o-qty").value.trim();
  if ($("o-unit").value === "quote") { const c = await preview(); if (!c) return; quantity = c.quantity; }
  const body = { symbol: state.symbol, side, type, quantity, reduce_only: $("o-reduce").checked };
  if (type === "LIMIT") { body.price = $("o-price").value.trim(); body.time_in_force = $("o-tif").value; }
  else if ($("o-tif").value === "FOK") body.time_in_force = "FOK";
  try {
    await api("POST", "/api/v1/leverage", { symbol: state.symbol, leverage: Number($("o-lev").value) });
    const placed = await api("POST", "/api/v1/orders", body);
    const o = placed.order;
    const why = placed.code ? ` (${placed.msg}, code ${placed.code})` : "";
    const ended = o && (o.status === "REJECTED" || o.status === "EXPIRED") && Number(o.filled) === 0;
    say("order-msg", o ? `order ${o.order_id}: ${o.status}, filled ${o.filled}${why}` : `order ${placed.order_id} accepted`, !ended);
  } catch (err) { say("order-msg", errorText(err), false); }
  refresh();
}

async function onClick(ev) {
  const t = ev.target;
  if (t.dataset.login) { focusLogin(); return; }
  try {
    if (t.dataset.cancel) await api("DELETE", `/api/v1/orders/${t.dataset.cancel}?symbol=${state.symbol}`);
    else if (t.dataset.close) {
      const size = t.dataset.size; const side = size.startsWith("-") ? "BUY" : "SELL";
      await api("POST", "/api/v1/orders", { symbol: t.dataset.close, side, type: "MARKET", quantity: size.replace("-", ""), reduce_only: true });
    } else if (t.dataset.revoke) await api("DELETE", `/api/v1/keys/${t.dataset.revoke}`);
    else return;
  } catch (err) { say("order-msg", errorText(err), false); }
  refresh();
}

async function wallet(kind) {
  const amount = $("w-amount").value.trim();
  try {
    await api("POST", `/api/v1/wallet/${kind}`, { asset: "USDT", amount });
    say("wallet-msg", `${kind === "deposits" ? "deposited" : "withdrew"} ${amount} USDT`, true);
  } catch (err) { say("wallet-msg", errorText(err), false); }
}

async function createKey(ev) {
  ev.preventDefault();
  const permissions = ["read"].concat($("k-trade").checked ? ["trade"] : [], $("k-withdraw").checked ? ["withdraw"] : [],
    $("k-manage").checked ? ["manage_keys"] : []);
  try {
    const key = await api("POST", "/api/v1/keys", { permissions, label: $("k-label").value });
    say("key-secret", `API key ${key.api_key} secret ${key.api_secret} (shown once: copy it now)`, true);
  } catch (err) { say("key-secret", errorText(err), false); }
  loadKeys();
}

function tickCountdown() {
  if (!state.nextFunding) return;
  const s = Math.max(0, Math.round((state.nextFunding - Date.now()) / 1000));
  $("t-countdown").textContent = `${String(Math.floor(s / 3600)).padStart(2, "0")}:${String(Math.floor(s / 60) % 60).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

async function start() {
  $("login-form").addEventListener("submit", (ev) => { ev.preventDefault(); authenticate("login"); });
  $("do-signup").addEventListener("click", () => authenticate("signup"));
  $("open-login").addEventListener("click", focusLogin);
  $("logout").addEventListener("click", async () => { try { await api("POST", "/api/v1/auth/logout"); } catch (e) { /* ended */ } closeAccountStream(); session.clear(); route(); });
  $("theme").addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next; localStorage.setItem("theme", next);
    if (state.chart) state.chart.applyOptions({ layout: { textColor: next === "dark" ? "#e6edf3" : "#1b1f24" } });
  });
  $("order-form").addEventListener("submit", placeOrder);
  $("o-type").addEventListener("change", () => { $("o-price").disabled = $("o-type").value === "MARKET"; });
  $("cancel-all").addEventListener("click", async () => { try { await api("DELETE", `/api/v1/orders?symbol=${state.symbol}`); } catch (err) { say("order-msg", errorText(err), false); } refresh(); });
  $("wallet-form").addEventListener("submit", (ev) => { ev.preventDefault(); wallet("deposits"); });  // Enter deposits
  $("w-withdraw").addEventListener("click", () => wallet("withdrawals"));
  $("key-form").addEventListener("submit", createKey);
  $("interval").addEventListener("change", () => { state.interval = $("interval").value; refresh(); });
  ["o-price", "o-qty", "o-lev", "o-unit"].forEach((id) => $(id).addEventListener("change", preview));
  document.addEventListener("click", onClick);
  document.addEventListener("visibilitychange", () => { if (document.hidden) { closeStream(); closeAccountStream(); } refresh(); });
  window.addEventListener("hashchange", route);
  state.instruments = await api("GET", "/api/v1/market/instruments", undefined, { auth: false });
  $("symbol").innerHTML = state.instruments.map((i) => `<option>${i.symbol}</option>`).join("");
  state.symbol = state.instruments[0].symbol;
  $("symbol").addEventListener("change", () => { state.symbol = $("symbol").value; refresh(); });
  route();
  setInterval(refresh, 2000);
  setInterval(tickCountdown, 1000);
}

start();
