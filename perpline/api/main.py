"""`perpline api`: serve the REST API with uvicorn.

The read model starts catching up (the newest checkpoint, then the topics after it) before the web
framework is imported: importing FastAPI, pydantic, uvicorn and the routes is about 1.5 s of CPU, and
the restore spends much of its time waiting on the broker meanwhile (bench.replica: a replica's
`/readyz` came that much sooner). So this module imports only what the read model needs at the top.
The cyclic garbage collector is paused while the process builds what it keeps (about 0.1 s of the
imports' CPU), then what was built is frozen out of later collections.
"""

from __future__ import annotations

import argparse
import gc

from perpline.api.readmodel import ReadModel, start_read_model
from perpline.auth.crypto import load_secret_key
from perpline.auth.registry import KeyRegistry
from perpline.config import Settings, settings, topic_map
from perpline.obs import setup_logging


def main(argv: list[str] | None = None) -> None:
    gc.disable()  # while importing: the start's millions of long-lived objects hold no cycles (see serve)
    cfg = settings()
    parser = argparse.ArgumentParser(prog="perpline api")
    parser.add_argument("--host", default=cfg.api_host)
    parser.add_argument("--port", type=int, default=cfg.api_port)
    args = parser.parse_args(argv)
    setup_logging("api")
    secret_key = load_secret_key(cfg.data_dir, cfg.secret_key)
    topics = topic_map()
    registry, readmodel = start_read_model(cfg.kafka_bootstrap, topics, secret_key)
    serve(cfg, args.host, args.port, topics, secret_key, registry, readmodel)


def serve(cfg: Settings, host: str, port: int, topics: dict[str, str], secret_key: str, registry: KeyRegistry,
          readmodel: ReadModel) -> None:
    """Import the web framework and the routes (while the read model catches up), then serve."""
    import uvicorn  # noqa: PLC0415 (imported after the read model started: see the module's docstring)

    from perpline.api import fstream  # noqa: PLC0415
    from perpline.api.app import ApiDeps, create_app  # noqa: PLC0415
    from perpline.api.clientip import trusted_networks  # noqa: PLC0415
    from perpline.api.ratelimit import RateLimiter  # noqa: PLC0415
    from perpline.auth.throttle import LoginLimiter  # noqa: PLC0415

    deps = ApiDeps(bootstrap=cfg.kafka_bootstrap, topics=topics, wait_s=cfg.api_wait_ms / 1000,
                   clickhouse_url=cfg.clickhouse_url, secret_key=secret_key,
                   trust_account_header=cfg.trust_account_header, faucet=cfg.faucet,
                   limiter=RateLimiter(*cfg.rate_limits), logins=LoginLimiter(max_lockout_s=cfg.login_lockout_max_s),
                   trusted_proxies=trusted_networks(cfg.trusted_proxies),
                   registry=registry, readmodel=readmodel)
    # proxy_headers off: uvicorn would otherwise take X-Forwarded-For from any loopback peer as the client's
    # address; perpline.api.clientip.client_ip applies PERPLINE_TRUSTED_PROXIES, the one rule for it
    app = create_app(deps)
    gc.enable()
    gc.freeze()  # what the start built lives as long as the process: later collections need not walk it
    uvicorn.run(app, host=host, port=port, http="httptools", log_config=None, access_log=False,
                timeout_graceful_shutdown=5, proxy_headers=False, **fstream.uvicorn_ws_options())


if __name__ == "__main__":
    main()
