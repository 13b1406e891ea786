"""`perpline up`: the whole exchange on one machine, one process per component.

    broker (Tansu, memory) -> clickhouse (chdb behind the HTTP interface)
      -> matcher, accounts, clearing, ledger-sink -> api -> demo traders (--demo)

With PERPLINE_KAFKA_BOOTSTRAP set, that broker is used and none is started (topics are
ensured); with PERPLINE_CLICKHOUSE_URL set, that server is used and none is started.
The embedded broker keeps everything in memory, so an embedded stack starts clean:
the matcher's WAL and the processors' state from an earlier run are removed with it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from perpline.config import settings
from perpline.stack.supervisor import ComponentSpec, Supervisor, file_probe, free_port, http_probe

PY = sys.executable
METRICS_BASE_PORT = 19100


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

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"


def _port(default: int, free: bool) -> int:
    return free_port() if free else default


def make_plan(args: argparse.Namespace) -> Plan:
    cfg = settings()
    external_kafka = os.environ.get("PERPLINE_KAFKA_BOOTSTRAP")
    external_ch = os.environ.get("PERPLINE_CLICKHOUSE_URL")
    kafka = external_kafka or f"127.0.0.1:{_port(19092, args.free_ports)}"
    clickhouse = external_ch or f"http://127.0.0.1:{_port(18123, args.free_ports)}"
    api_port = free_port() if args.free_ports and args.api_port is None else (args.api_port or cfg.api_port)
    return Plan(Path(args.data_dir or cfg.data_dir).resolve(), kafka, clickhouse, args.api_host or cfg.api_host, api_port,
                not external_kafka, not external_ch, args.demo, args.free_ports)


def _base_env(plan: Plan) -> dict[str, str]:
    """What every component gets. The embedded (demo) stack also trusts X-Account-Id and opens the
    faucet unless the caller's environment says otherwise; a stack on an external broker never does."""
    demo_default = "1" if plan.embedded_broker else "0"
    return {"PERPLINE_KAFKA_BOOTSTRAP": plan.kafka, "PERPLINE_CLICKHOUSE_URL": plan.clickhouse,
            "PERPLINE_DATA_DIR": str(plan.data_dir), "PYTHONUNBUFFERED": "1",
            "PERPLINE_TRUST_ACCOUNT_HEADER": os.environ.get("PERPLINE_TRUST_ACCOUNT_HEADER", demo_default),
            "PERPLINE_FAUCET": os.environ.get("PERPLINE_FAUCET", demo_default)}


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
        spec("broker", [PY, "-m", "perpline.broker.tansu", "--host", host, "--port", port], [], ready_file=False,
             ready=_topics_probe(plan.kafka))
        deps.append("broker")
    if plan.embedded_clickhouse:
        ch_port = plan.clickhouse.rsplit(":", 1)[1]
        spec("clickhouse", [PY, "-m", "perpline.ch.server", "--data-dir", str(plan.data_dir / "clickhouse"),
                            "--port", ch_port], [], ready_file=False, ready=http_probe(plan.clickhouse + "/ping"))
    spec("matcher", [PY, "-m", "perpline.matcher.runner", "--data-dir", str(plan.data_dir / "matcher")], deps,
         ready_timeout_s=120)
    for name, module in (("accounts", "perpline.pipelines.accounts"), ("clearing", "perpline.pipelines.clearing")):
        spec(name, [PY, "-m", module, "--state-dir", str(plan.data_dir / "state" / name)], deps, ready_timeout_s=120)
    spec("ledger-sink", [PY, "-m", "perpline.pipelines.ledger_sink"],
         deps + (["clickhouse"] if plan.embedded_clickhouse else []), ready_timeout_s=120)
    spec("index-feed", [PY, "-m", "perpline.risk.index_feed"], deps)
    funding_s = os.environ.get("PERPLINE_FUNDING_INTERVAL_S", "60" if plan.demo else str(8 * 3600))
    spec("risk", [PY, "-m", "perpline.risk.runner"], deps, env_extra={"PERPLINE_FUNDING_INTERVAL_S": funding_s},
         ready_timeout_s=120)
    spec("recon", [PY, "-m", "perpline.recon.runner"], deps + (["clickhouse"] if plan.embedded_clickhouse else []),
         ready_timeout_s=120)
    spec("api", [PY, "-m", "perpline.api.main", "--host", plan.api_host, "--port", str(plan.api_port)],
         ["matcher", "accounts", "clearing"], ready_file=False, ready=http_probe(plan.api_url + "/readyz"),
         ready_timeout_s=120)
    if plan.demo:
        spec("demo", [PY, "-m", "perpline.demo.traders", "--api", plan.api_url], ["api", "ledger-sink"],
             ready_file=False, ready=None)
    plan_metrics.update(metrics)
    return specs


plan_metrics: dict[str, int] = {}


def _topics_probe(bootstrap: str):  # type: ignore[no-untyped-def]
    from perpline.broker.tansu import topics_ready  # noqa: PLC0415 (imports confluent_kafka)

    return lambda: topics_ready(bootstrap)


def prepare(plan: Plan) -> None:
    plan.data_dir.mkdir(parents=True, exist_ok=True)
    if plan.embedded_broker:  # memory broker: start clean, or the WAL and state would disagree with it
        for sub in ("matcher", "state", "run", "clickhouse"):
            shutil.rmtree(plan.data_dir / sub, ignore_errors=True)
    else:
        from perpline.broker.tansu import ensure_topics  # noqa: PLC0415

        ensure_topics(plan.kafka)
        shutil.rmtree(plan.data_dir / "run", ignore_errors=True)


def announce(plan: Plan, started: float) -> None:
    print(f"perpline ready: api={plan.api_url}", flush=True)
    print(f"  api docs   {plan.api_url}/docs", flush=True)
    print(f"  metrics    {plan.api_url}/metrics  " + "  ".join(
        f"{name}=http://127.0.0.1:{port}/metrics" for name, port in plan_metrics.items() if name != "api"), flush=True)
    print(f"  kafka={plan.kafka}  clickhouse={plan.clickhouse}  data={plan.data_dir}", flush=True)
    print(f"  API keys   PERPLINE_KAFKA_BOOTSTRAP={plan.kafka} PERPLINE_DATA_DIR={plan.data_dir} "
          ".venv/bin/perpline admin create-user --deposit USDT=10000", flush=True)
    print(f"  ready in {time.monotonic() - started:.1f}s; Ctrl-C stops everything", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="perpline up", description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", action="store_true", help="also run simulated market makers and takers")
    parser.add_argument("--data-dir", default=None, help="default: $PERPLINE_DATA_DIR or ./.perpline")
    parser.add_argument("--api-host", default=None, help="default: $PERPLINE_API_HOST or 127.0.0.1")
    parser.add_argument("--api-port", type=int, default=None, help="default: $PERPLINE_API_PORT or 8080")
    parser.add_argument("--free-ports", action="store_true", help="pick free ports for everything (tests)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    plan = make_plan(args)
    prepare(plan)
    sup = Supervisor(components(plan))
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
