"""Configuration: environment variables (flags override them where a command offers one).

Every variable is listed in the README. Nothing else reads os.environ for settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from perpline.contracts import topics


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default) or default


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = _env(name, default)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str
    clickhouse_url: str
    data_dir: Path
    api_host: str
    api_port: int
    topic_prefix: str
    log_level: str
    api_wait_ms: int
    fsync: str
    secret_key: str  # Fernet key for API secrets at rest; "" = the data dir's key file
    trust_account_header: bool  # accept a bare X-Account-Id (embedded demo only)
    faucet: bool  # traders may credit their own wallet through the API (embedded demo only)
    rate_limits: tuple[int, int, int]  # request weight per IP, per API key, and orders per key, per minute
    login_lockout_max_s: float  # the longest lockout after failed logins (perpline.auth.throttle)
    rate_limits: tuple[int, int, int]  # request weight per IP and per caller, and orders per caller, per minute
    trusted_proxies: tuple[str, ...]  # addresses/CIDRs whose X-Forwarded-For is believed (none by default)
    api_checkpoint_events: int  # an API replica writes a read-model checkpoint this many source records after the last
    api_start: str  # "checkpoint": a new API replica starts from the newest checkpoint; "replay": from offset 0


def settings() -> Settings:
    return Settings(
        kafka_bootstrap=_env("PERPLINE_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
        clickhouse_url=_env("PERPLINE_CLICKHOUSE_URL", "http://127.0.0.1:18123"),
        data_dir=Path(_env("PERPLINE_DATA_DIR", ".perpline")).resolve(),
        api_host=_env("PERPLINE_API_HOST", "127.0.0.1"),
        api_port=int(_env("PERPLINE_API_PORT", "8080")),
        topic_prefix=_env("PERPLINE_TOPIC_PREFIX", ""),
        log_level=_env("PERPLINE_LOG_LEVEL", "INFO"),
        api_wait_ms=int(_env("PERPLINE_API_WAIT_MS", "5000")),
        fsync=_env("PERPLINE_MATCHER_FSYNC", "batch"),
        secret_key=os.environ.get("PERPLINE_SECRET_KEY", ""),
        trust_account_header=_env("PERPLINE_TRUST_ACCOUNT_HEADER", "0") == "1",
        faucet=_env("PERPLINE_FAUCET", "0") == "1",
        rate_limits=(int(_env("PERPLINE_RATE_LIMIT_IP", "6000")), int(_env("PERPLINE_RATE_LIMIT_KEY", "2400")),
                     int(_env("PERPLINE_RATE_LIMIT_ORDERS", "1200"))),
        login_lockout_max_s=float(_env("PERPLINE_LOGIN_LOCKOUT_MAX_S", "900")),
        trusted_proxies=tuple(p.strip() for p in _env("PERPLINE_TRUSTED_PROXIES", "").split(",") if p.strip()),
        api_checkpoint_events=int(_env("PERPLINE_API_CHECKPOINT_EVENTS", "100000")),
        api_start=_choice("PERPLINE_API_START", "checkpoint", ("checkpoint", "replay")),
    )


FUNDING_INTERVAL_S = 8 * 3600  # Binance's


def funding_interval_ms() -> int:
    """The funding interval (PERPLINE_FUNDING_INTERVAL_S, 8 h by default): the risk process settles at
    its multiples, and the API announces them (nextFundingTime before the first mark, fundingIntervalHours)."""
    return int(float(_env("PERPLINE_FUNDING_INTERVAL_S", str(FUNDING_INTERVAL_S))) * 1000)


def push_listen() -> str:
    """Where a writer (accounts processor, matcher shard, risk process) pushes its final records to API processes
    (PERPLINE_PUSH_LISTEN, host:port; "" = it pushes nothing): perpline.push."""
    return os.environ.get("PERPLINE_PUSH_LISTEN", "").strip()


def push_feeds() -> list[str]:
    """The writers an API process takes pushed records from (PERPLINE_PUSH_FEEDS, comma-separated
    host:port; none = the topics alone, as before): perpline.push."""
    return [a.strip() for a in os.environ.get("PERPLINE_PUSH_FEEDS", "").split(",") if a.strip()]


LOGICAL_TOPICS = topics.ALL  # the names live in perpline.contracts.topics (from redpanda/topics.yaml)


def topic_map(prefix: str | None = None) -> dict[str, str]:
    """Logical topic name -> the name on the broker (PERPLINE_TOPIC_PREFIX isolates test runs)."""
    return {name: topics.physical(name, prefix) for name in topics.ALL}


def fetch_config(on_write_path: bool = True) -> dict[str, object]:
    """A consumer's fetch settings, by whether an order's answer waits for it.

    perpline's embedded broker, like Redpanda, answers a waiting fetch as soon as a record arrives, so
    the wait sets only how often an idle consumer asks (an idle stack 7.7 % of a core at these values).
    On Tansu (PERPLINE_BROKER=tansu) a record reached a waiting consumer about a quarter of the wait
    after it was produced (docs/architecture.md), which is why the consumers an answer waits for
    (matcher, accounts, the API's read model) use the shorter PERPLINE_FETCH_WAIT_MS (20 ms) and the
    others (ledger sink, risk process) PERPLINE_BACKGROUND_FETCH_WAIT_MS (200 ms)."""
    if on_write_path:
        return {"fetch.wait.max.ms": int(_env("PERPLINE_FETCH_WAIT_MS", str(WRITE_PATH_FETCH_WAIT_MS)))}
    return {"fetch.wait.max.ms": int(_env("PERPLINE_BACKGROUND_FETCH_WAIT_MS", str(BACKGROUND_FETCH_WAIT_MS)))}


Guarantee = Literal["exactly-once", "at-least-once"]  # a Quix processing guarantee


def processing_guarantee() -> Guarantee:
    """The Quix guarantee of the stateful processors on the write path (accounts, clearing).

    exactly-once (the default): outputs are visible when the checkpoint's transaction commits, every
    PERPLINE_COMMIT_INTERVAL_S (20 ms: about 10 ms more per processor hop). at-least-once: visible
    when produced, but on the embedded broker its producers must send one record per batch, which
    caps a processor at a few thousand records a second: measured with bench.load, one pair answers
    in 24 / 37 ms (resting / taking, p50) against 52 / 117 ms, but 32 pairs do 54 orders/s against
    148 (docs/architecture.md, "The latency floor of each hop"). Either is exact: every consumer
    applies a re-sent record once."""
    value = _env("PERPLINE_PROCESSING_GUARANTEE", "exactly-once")
    if value not in ("exactly-once", "at-least-once"):
        raise ValueError(f"PERPLINE_PROCESSING_GUARANTEE must be exactly-once or at-least-once, not {value!r}")
    return value  # type: ignore[return-value]


WRITE_PATH_FETCH_WAIT_MS = 20
BACKGROUND_FETCH_WAIT_MS = 200


# librdkafka security settings, each from its own variable; unset = not sent (the embedded broker has
# no authentication). Production: SASL_SSL + SCRAM against Redpanda (docs/deploy.md).
KAFKA_SECURITY_ENV = {
    "security.protocol": "PERPLINE_KAFKA_SECURITY_PROTOCOL",
    "sasl.mechanism": "PERPLINE_KAFKA_SASL_MECHANISM",
    "sasl.username": "PERPLINE_KAFKA_SASL_USERNAME",
    "sasl.password": "PERPLINE_KAFKA_SASL_PASSWORD",
    "ssl.ca.location": "PERPLINE_KAFKA_SSL_CA_LOCATION",
}


def kafka_security_config() -> dict[str, str]:
    """The librdkafka security keys set in the environment (KAFKA_SECURITY_ENV)."""
    return {key: value for key, name in KAFKA_SECURITY_ENV.items() if (value := os.environ.get(name, ""))}


def kafka_config(bootstrap: str, **extra: object) -> dict[str, object]:
    """What every Kafka client (producer, consumer, admin) starts from: the brokers and the security
    settings. The one place they are assembled, so no client can connect without them."""
    return {"bootstrap.servers": bootstrap, **kafka_security_config(), **extra}


def producer_config(bootstrap: str, **extra: object) -> dict[str, object]:
    """Every plain producer's settings. The partitioner must match Quix Streams' (murmur2, as Java
    clients) or one account's messages would land on different partitions and state stores."""
    return kafka_config(bootstrap, **{"partitioner": "murmur2", "enable.idempotence": True, "acks": "all",
                                      "linger.ms": 1, **extra})
