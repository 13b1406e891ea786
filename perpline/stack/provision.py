"""One-shot provisioning for a cluster (the Kubernetes Jobs; idempotent, rerun on every deploy):

    python -m perpline.stack.provision topics [--schema-registry http://redpanda-0.redpanda:8081]
    python -m perpline.stack.provision migrations

`topics` creates every topic of redpanda/topics.yaml that is missing (PERPLINE_KAFKA_BOOTSTRAP,
PERPLINE_REPLICATION_FACTOR) and registers each topic's JSON Schema (redpanda/schemas/) as the
subject "<topic>-value"; `migrations` applies clickhouse/migrations to PERPLINE_CLICKHOUSE_URL.
"""

from __future__ import annotations

import argparse
import json
import urllib.request

from perpline import REPO_ROOT
from perpline.ch.client import get_client, wait_ready
from perpline.ch.migrate import apply_migrations
from perpline.config import settings, topic_map

SCHEMAS_DIR = REPO_ROOT / "redpanda" / "schemas"


def register_schemas(registry_url: str) -> list[str]:
    """POST every schema to the registry (registering an identical schema again is a no-op there)."""
    done = []
    for logical, physical in topic_map().items():
        path = SCHEMAS_DIR / f"{logical}.json"
        if not path.exists():
            continue
        body = json.dumps({"schemaType": "JSON", "schema": path.read_text()}).encode()
        request = urllib.request.Request(f"{registry_url}/subjects/{physical}-value/versions", data=body, method="POST",
                                         headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (the cluster's own registry)
            response.read()
        done.append(physical)
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="perpline provision")
    parser.add_argument("what", choices=["topics", "migrations"])
    parser.add_argument("--schema-registry", default=None)
    args = parser.parse_args(argv)
    cfg = settings()
    if args.what == "topics":
        from perpline.broker.admin import ensure_topics  # noqa: PLC0415 (imports confluent_kafka)

        ensure_topics(cfg.kafka_bootstrap)
        if args.schema_registry:
            print(json.dumps({"schemas_registered": register_schemas(args.schema_registry)}))
    else:
        wait_ready(cfg.clickhouse_url, timeout_s=300)
        print(json.dumps({"migrations_applied": apply_migrations(get_client(cfg.clickhouse_url))}))


if __name__ == "__main__":
    main()
