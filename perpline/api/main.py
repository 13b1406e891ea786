"""`perpline api`: serve the REST API with uvicorn."""

from __future__ import annotations

import argparse

import uvicorn

from perpline.api import fstream
from perpline.api.app import ApiDeps, create_app
from perpline.api.clientip import trusted_networks
from perpline.api.ratelimit import RateLimiter
from perpline.auth.crypto import load_secret_key
from perpline.auth.throttle import LoginLimiter
from perpline.config import settings, topic_map
from perpline.obs import setup_logging


def main(argv: list[str] | None = None) -> None:
    cfg = settings()
    parser = argparse.ArgumentParser(prog="perpline api")
    parser.add_argument("--host", default=cfg.api_host)
    parser.add_argument("--port", type=int, default=cfg.api_port)
    args = parser.parse_args(argv)
    setup_logging("api")
    deps = ApiDeps(bootstrap=cfg.kafka_bootstrap, topics=topic_map(), wait_s=cfg.api_wait_ms / 1000,
                   clickhouse_url=cfg.clickhouse_url, secret_key=load_secret_key(cfg.data_dir, cfg.secret_key),
                   trust_account_header=cfg.trust_account_header, faucet=cfg.faucet,
                   limiter=RateLimiter(*cfg.rate_limits), logins=LoginLimiter(max_lockout_s=cfg.login_lockout_max_s),
                   trusted_proxies=trusted_networks(cfg.trusted_proxies))
    # proxy_headers off: uvicorn would otherwise take X-Forwarded-For from any loopback peer as the client's
    # address; perpline.api.clientip.client_ip applies PERPLINE_TRUSTED_PROXIES, the one rule for it
    uvicorn.run(create_app(deps), host=args.host, port=args.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=5, proxy_headers=False, **fstream.uvicorn_ws_options())


if __name__ == "__main__":
    main()
