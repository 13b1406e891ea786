"""`perpline up`: the whole exchange on one machine, one process per component.

    broker (Tansu, memory) -> clickhouse (chdb behind the HTTP interface)
      -> matcher (with clearing), accounts, ledger-sink -> api -> demo traders (--demo)

With PERPLINE_KAFKA_BOOTSTRAP set, that broker is used and none is started (topics are
ensured); with PERPLINE_CLICKHOUSE_URL set, that server is used and none is started.
The embedded broker keeps everything in memory, so an embedded stack starts clean:
the matcher's WAL and the processors' state from an earlier run are removed with it; for the
same reason its death stops the whole stack (it is never restarted empty under the others).

Two stacks on one machine: before anything starts or is removed, a port this stack would listen
on that another process holds, or a data dir another `perpline up` holds, makes it exit 1 naming
the port and the process (taken_ports, lock_data_dir); after that the broker launcher and the
supervisor check that what answers on a port is their own child (ComponentSpec.ports).

Exposure: the embedded broker has no authentication (any local process may write to any
topic), so the API is kept on loopback while it is in use unless --i-know-the-broker-is-open;
the broker and the embedded ClickHouse always bind 127.0.0.1. The embedded ClickHouse has
users with generated passwords (perpline.ch.users): the writers get the admin's URL, the API
the read-only user's, and the announcement prints the read-only URL for notebooks.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from perpline.ch.users import (
    ADMIN_USER,
    READER_USER,
    USERS_DIR_NAME,
    ensure_passwords,
    redacted,
    with_credentials,
)
from perpline.config import settings
from perpline.contracts.codes import PerplineError
from perpline.contracts.topics import MAX_PARTITIONS_ENV
from perpline.stack import ports
from perpline.stack.supervisor import ComponentSpec, Supervisor, file_probe, free_port, http_probe

PY = sys.executable
METRICS_BASE_PORT = 19100
PUSH_BASE_PORT = 19170  # the writers' push ports (perpline.push): the matcher shards', the accounts processor's, the risk process's
LOCAL_HOST = "127.0.0.1"  # where the embedded broker and ClickHouse listen, always
OPEN_BROKER_FLAG = "--i-know-the-broker-is-open"
LOCK_FILE = "up.lock"  # in the data dir: held (flock) by the running `perpline up`
BROKER_GONE = ("the embedded broker keeps every record in memory only, so every topic is gone with it and no "
               "component can go on (a restarted broker would be empty); run `perpline up` again for a clean stack")


@dataclass
class Plan:
    data_dir: Path
    kafka: str
    clickhouse: str
    api_host: str
    api_port: int
    embedded_broker: bool
    embedded_clickhouse: bool
    demo: bool
    free_ports: bool
    matcher_shards: int = 1  # matcher processes, each owning the `orders` partitions p with p % N == its index
    ch_passwords: dict[str, str] = field(default_factory=dict)  # embedded ClickHouse's users, set by prepare()

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def matcher_names(self) -> list[str]:
        """"matcher" for one shard (what tests, benches and dashboards know), matcher-0.. for more."""
        return ["matcher"] if self.matcher_shards == 1 else [f"matcher-{i}" for i in range(self.matcher_shards)]

    @property
    def users_dir(self) -> Path:
        return self.data_dir / USERS_DIR_NAME

    @property
    def clickhouse_url(self) -> str:
        """What the writers (ledger sink, reconciler) get: the admin user's URL on the embedded server."""
        return self._clickhouse_as(ADMIN_USER)

    @property
    def clickhouse_reader_url(self) -> str:
        """What the API and notebooks get: the read-only user's URL (an external server's URL as given)."""
        return self._clickhouse_as(READER_USER)

    def _clickhouse_as(self, user: str) -> str:
        if not self.embedded_clickhouse:
            return self.clickhouse
        assert self.ch_passwords, "prepare() generates the embedded ClickHouse's passwords"
        return with_credentials(self.clickhouse, user, self.ch_passwords[user])


def _port(default: int, free: bool) -> int:
    return free_port() if free else default


def make_plan(args: argparse.Namespace) -> Plan:
    cfg = settings()
    external_kafka = os.environ.get("PERPLINE_KAFKA_BOOTSTRAP")
    external_ch = os.environ.get("PERPLINE_CLICKHOUSE_URL")
    kafka = external_kafka or f"{LOCAL_HOST}:{args.kafka_port or _port(19092, args.free_ports)}"
    clickhouse = external_ch or f"http://{LOCAL_HOST}:{args.clickhouse_port or _port(18123, args.free_ports)}"
    api_port = free_port() if args.free_ports and args.api_port is None else (args.api_port or cfg.api_port)
    return Plan(Path(args.data_dir or cfg.data_dir).resolve(), kafka, clickhouse, args.api_host or cfg.api_host, api_port,
                not external_kafka, not external_ch, args.demo, args.free_ports,
                matcher_shards(getattr(args, "matcher_shards", None)))


def matcher_shards(flag: int | None) -> int:
    """--matcher-shards, else $PERPLINE_MATCHER_SHARDS, else 1; bounded by the partitions of `orders`."""
    from perpline.matcher.shards import SHARDS_ENV, Shard, check_count, orders_partitions  # noqa: PLC0415

    count = flag if flag is not None else int(os.environ.get(SHARDS_ENV) or 1)
    check_count(Shard(0, count), orders_partitions())
    return count


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def exposure_refusal(plan: Plan, broker_open_ok: bool) -> str | None:
    """Why this plan must not run, or None. The embedded broker has no authentication, so an API
    reachable from other machines would sit beside a broker that any local process can write
    deposits to; we only run that way when the operator says they know."""
    if plan.embedded_broker and not is_loopback(plan.api_host) and not broker_open_ok:
        return (f"--api-host {plan.api_host} is not loopback, and the embedded broker (Tansu) has no authentication: "
                "any process on this machine can write to its topics, deposits on account.commands included. "
                "Keep the API on 127.0.0.1 (put a reverse proxy in front of it), run against a broker with SASL/TLS "
                f"(PERPLINE_KAFKA_BOOTSTRAP, docs/deploy.md), or pass {OPEN_BROKER_FLAG} if this machine is yours alone.")
    return None


def _base_env(plan: Plan) -> dict[str, str]:
    """What every component gets. The embedded (demo) stack also trusts X-Account-Id and opens the
    faucet unless the caller's environment says otherwise; a stack on an external broker never does."""
    demo_default = "1" if plan.embedded_broker else "0"
    env = {"PERPLINE_KAFKA_BOOTSTRAP": plan.kafka, "PERPLINE_CLICKHOUSE_URL": plan.clickhouse_url,
           "PERPLINE_DATA_DIR": str(plan.data_dir), "PYTHONUNBUFFERED": "1",
           "PERPLINE_TRUST_ACCOUNT_HEADER": os.environ.get("PERPLINE_TRUST_ACCOUNT_HEADER", demo_default),
           "PERPLINE_FAUCET": os.environ.get("PERPLINE_FAUCET", demo_default)}
    if plan.embedded_broker:
        env[MAX_PARTITIONS_ENV] = embedded_partitions(plan)
    return env


def embedded_partitions(plan: Plan) -> str:
    """The embedded stack's partition cap: one partition per matcher shard (one process of each kind
    consumes them all; every extra partition is one more produce request per transaction on the one
    broker), unless $PERPLINE_MAX_PARTITIONS says otherwise."""
    return os.environ.get(MAX_PARTITIONS_ENV) or str(plan.matcher_shards)


def components(plan: Plan) -> list[ComponentSpec]:
    env, specs = _base_env(plan), []
    ports = iter(range(METRICS_BASE_PORT, METRICS_BASE_PORT + 50))
    metrics: dict[str, int] = {}

    def spec(name: str, argv: list[str], after: list[str], ready_file: bool = True, **kw: object) -> None:
        metrics[name] = free_port() if plan.free_ports else next(ports)
        if name == "clickhouse":  # serves /metrics on its own HTTP port
            metrics[name] = int(plan.clickhouse.rsplit(":", 1)[1])
        extra = {**env, "PERPLINE_METRICS_PORT": str(metrics[name]), **kw.pop("env_extra", {})}  # type: ignore[dict-item]
        probe = kw.pop("ready", None)
        if ready_file:
            path = plan.data_dir / "run" / f"{name}.ready"
            extra["PERPLINE_READY_FILE"] = str(path)
            probe = file_probe(str(path))
        specs.append(ComponentSpec(name=name, argv=argv, env=extra, ready=probe, after=after, **kw))  # type: ignore[arg-type]

    host, port = plan.kafka.rsplit(":", 1)
    deps: list[str] = []
    if plan.embedded_broker:
        assert host == LOCAL_HOST, host
        spec("broker", [PY, "-m", "perpline.broker.launch", "--host", host, "--port", port,
                        "--spill-dir", str(plan.data_dir / "broker")], [], ready_file=False,
             ready=_topics_probe(plan.kafka), fatal=BROKER_GONE, ports=[int(port)])
        deps.append("broker")
    if plan.embedded_clickhouse:
        ch_port = plan.clickhouse.rsplit(":", 1)[1]
        spec("clickhouse", [PY, "-m", "perpline.ch.server", "--data-dir", str(plan.data_dir / "clickhouse"),
                            "--users-dir", str(plan.users_dir), "--host", LOCAL_HOST, "--port", ch_port], [],
             ready_file=False, ready=http_probe(plan.clickhouse + "/ping"), ports=[int(ch_port)])
    with_ch = deps + (["clickhouse"] if plan.embedded_clickhouse else [])  # for what reads or writes ClickHouse
    pushes = push_ports(plan)
    listen = {name: {"PERPLINE_PUSH_LISTEN": f"{LOCAL_HOST}:{port}"} for name, port in pushes.items()}
    for index, name in enumerate(plan.matcher_names):
        spec(name, [PY, "-m", "perpline.matcher.runner", "--data-dir", str(plan.data_dir / "matcher"),
                    "--shard", str(index), "--shards", str(plan.matcher_shards)], deps, ready_timeout_s=120,
             env_extra=listen.get(name, {}))
    spec("accounts", [PY, "-m", "perpline.pipelines.accounts", "--state-dir", str(plan.data_dir / "state" / "accounts")],
         deps, ready_timeout_s=120, env_extra=listen.get("accounts", {}))
    spec("ledger-sink", [PY, "-m", "perpline.pipelines.ledger_sink"],
         with_ch, ready_timeout_s=120)
    spec("index-feed", [PY, "-m", "perpline.risk.index_feed"], deps)
    funding_s = os.environ.get("PERPLINE_FUNDING_INTERVAL_S", "60" if plan.demo else str(8 * 3600))
    spec("risk", [PY, "-m", "perpline.risk.runner"], deps,
         env_extra={"PERPLINE_FUNDING_INTERVAL_S": funding_s, **listen.get("risk", {})}, ready_timeout_s=120)
    spec("recon", [PY, "-m", "perpline.recon.runner"], with_ch, ready_timeout_s=120)
    spec("api", [PY, "-m", "perpline.api.main", "--host", plan.api_host, "--port", str(plan.api_port)],
         # in the processors' wave, not after it: its start (imports, read model catch-up, about 3 s) overlaps
         # theirs (the accounts processor's group join, about 3 s), and `perpline up` still waits for all
         with_ch, ready_file=False, ready=http_probe(plan.api_url + "/readyz"),
         ready_timeout_s=120, env_extra={"PERPLINE_CLICKHOUSE_URL": plan.clickhouse_reader_url,  # it only reads
                                         "PERPLINE_FUNDING_INTERVAL_S": funding_s,
                                         "PERPLINE_PUSH_FEEDS": ",".join(f"{LOCAL_HOST}:{p}" for p in pushes.values())},
         ports=[plan.api_port])
    if plan.demo:
        spec("demo", [PY, "-m", "perpline.demo.traders", "--api", plan.api_url], ["api", "ledger-sink"],
             ready_file=False, ready=None)
    plan_metrics.update(metrics)
    return specs


plan_metrics: dict[str, int] = {}
plan_pushes: dict[str, int] = {}


def push_ports(plan: Plan) -> dict[str, int]:
    """The port each writer pushes its final records on (perpline.push), by component; none when
    $PERPLINE_PUSH is 0 (the API then waits for the topics alone, as an external deployment without
    push feeds does)."""
    plan_pushes.clear()
    if os.environ.get("PERPLINE_PUSH", "1") == "0":
        return {}
    names = [*plan.matcher_names, "accounts", "risk"]
    plan_pushes.update({name: free_port() if plan.free_ports else PUSH_BASE_PORT + i for i, name in enumerate(names)})
    return dict(plan_pushes)


def _topics_probe(bootstrap: str):  # type: ignore[no-untyped-def]
    from perpline.broker.admin import topics_ready  # noqa: PLC0415 (imports confluent_kafka)

    return lambda: topics_ready(bootstrap)


def taken_ports(plan: Plan) -> list[str]:
    """What stands in the way, one line per port this stack would listen on that another process holds:
    the embedded broker's and ClickHouse's, the API's, every component's /metrics. Checked before anything
    starts: a second stack on the same ports would otherwise find the first one's broker and ClickHouse
    answering and run its components against them."""
    wanted = {f"metrics of {name}": port for name, port in plan_metrics.items()
              if name not in ("clickhouse", "api")}  # these serve /metrics on their own port
    wanted["api"] = plan.api_port
    wanted.update({f"push of {name}": port for name, port in plan_pushes.items()})
    if plan.embedded_broker:
        wanted["broker"] = int(plan.kafka.rsplit(":", 1)[1])
    if plan.embedded_clickhouse:
        wanted["clickhouse"] = int(plan.clickhouse.rsplit(":", 1)[1])
    host = {"api": plan.api_host}
    return [f"port {port} ({what}) is in use by {ports.holder(port)}" for what, port in wanted.items()
            if not ports.is_free(host.get(what, LOCAL_HOST), port)]


def lock_data_dir(data_dir: Path) -> str | None:
    """Hold the data dir for this stack's life (an flock that dies with the process); None, or why not:
    a second stack on the same dir would wipe the first one's WAL and state on start."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        return f"data dir {data_dir} is in use by another perpline up (pid {holder})"
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held_locks.append(fd)
    return None


_held_locks: list[int] = []


def prepare(plan: Plan) -> None:
    plan.data_dir.mkdir(parents=True, exist_ok=True)
    if plan.embedded_broker:  # memory broker: start clean, or the WAL and state would disagree with it
        for sub in ("matcher", "state", "run", "clickhouse"):  # not USERS_DIR_NAME: notebooks keep their URL
            shutil.rmtree(plan.data_dir / sub, ignore_errors=True)
    else:
        from perpline.broker.admin import ensure_topics  # noqa: PLC0415

        ensure_topics(plan.kafka)
        shutil.rmtree(plan.data_dir / "run", ignore_errors=True)
    prepare_passwords(plan)


def prepare_passwords(plan: Plan) -> None:
    """The embedded ClickHouse's users (kept across runs): the components' URLs are made from them."""
    if plan.embedded_clickhouse and not plan.ch_passwords:
        plan.data_dir.mkdir(parents=True, exist_ok=True)
        plan.ch_passwords = ensure_passwords(plan.users_dir)


def announce(plan: Plan, started: float) -> None:
    print(f"perpline ready: api={plan.api_url}", flush=True)
    print(f"  api docs   {plan.api_url}/docs", flush=True)
    print(f"  metrics    {plan.api_url}/metrics  " + "  ".join(
        f"{name}=http://127.0.0.1:{port}/metrics" for name, port in plan_metrics.items() if name != "api"), flush=True)
    print(f"  kafka={plan.kafka}  clickhouse={redacted(plan.clickhouse)}  data={plan.data_dir}", flush=True)
    if plan.embedded_clickhouse:
        print(f"  notebooks  PERPLINE_CLICKHOUSE_URL={plan.clickhouse_reader_url}  (read-only user {READER_USER}; "
              f"the admin's password: {plan.users_dir / (ADMIN_USER + '.password')})", flush=True)
    if plan.embedded_broker:
        print("  security   the embedded broker has no authentication: any local process can write to its topics "
              "(README, Security)", flush=True)
    print(f"  API keys   PERPLINE_KAFKA_BOOTSTRAP={plan.kafka} PERPLINE_DATA_DIR={plan.data_dir} "
          ".venv/bin/perpline admin create-user --deposit USDT=10000", flush=True)
    print(f"  ready in {time.monotonic() - started:.1f}s; Ctrl-C stops everything", flush=True)


def refuse(reasons: list[str]) -> None:
    """Exit 1 before anything started or was removed, saying what is in the way."""
    print("perpline up: refusing to start, another stack (or another program) is in the way:", file=sys.stderr)
    for reason in reasons:
        print(f"  {reason}", file=sys.stderr)
    print("  stop it, or run this stack on other ports (--free-ports, --kafka-port, --clickhouse-port, --api-port) "
          "and another --data-dir", file=sys.stderr, flush=True)
    sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="perpline up", description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", action="store_true", help="also run simulated market makers and takers")
    parser.add_argument("--data-dir", default=None, help="default: $PERPLINE_DATA_DIR or ./.perpline")
    parser.add_argument("--api-host", default=None, help="default: $PERPLINE_API_HOST or 127.0.0.1")
    parser.add_argument("--api-port", type=int, default=None, help="default: $PERPLINE_API_PORT or 8080")
    parser.add_argument("--free-ports", action="store_true", help="pick free ports for everything (tests)")
    parser.add_argument("--kafka-port", type=int, default=None, help="the embedded broker's port (default 19092)")
    parser.add_argument("--clickhouse-port", type=int, default=None,
                        help="the embedded ClickHouse's port (default 18123)")
    parser.add_argument(OPEN_BROKER_FLAG, dest="broker_open_ok", action="store_true",
                        help="allow a non-loopback --api-host with the embedded broker, which has no authentication")
    parser.add_argument("--matcher-shards", type=int, default=None,
                        help="matcher processes, at most the partitions of `orders` (default: $PERPLINE_MATCHER_SHARDS or 1)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        plan = make_plan(args)
    except (ValueError, PerplineError) as exc:
        parser.error(str(exc))
    refusal = exposure_refusal(plan, args.broker_open_ok)
    if refusal:
        parser.error(refusal)
    prepare_passwords(plan)
    specs = components(plan)
    in_the_way = taken_ports(plan)
    locked = lock_data_dir(plan.data_dir)
    if in_the_way or locked:
        refuse(in_the_way + ([locked] if locked else []))
    prepare(plan)
    sup = Supervisor(specs)
    try:
        sup.start()
    except Exception as exc:  # noqa: BLE001 (report, stop everything, fail loudly)
        print(f"perpline up failed: {exc}", file=sys.stderr, flush=True)
        sup.stop()
        sys.exit(1)
    announce(plan, started)
    sys.exit(sup.run())


if __name__ == "__main__":
    main()
