"""JSON Schemas for every topic's messages, generated from the msgspec Structs.

Written to redpanda/schemas/<topic>.json in the layout the embedded broker's
file schema registry reads: an object whose `properties.value` is the schema of
the message value. `python -m perpline.contracts.schemas` regenerates them; a
test fails when the committed files are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from perpline.contracts.messages import TOPIC_TYPES

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "redpanda" / "schemas"


def topic_schema(topic: str) -> dict[str, Any]:
    value = msgspec.json.schema(TOPIC_TYPES[topic])
    defs = value.pop("$defs", {})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": topic,
        "type": "object",
        "$defs": defs,
        "properties": {"value": value},
    }


def render_all() -> dict[str, str]:
    return {f"{topic}.json": json.dumps(topic_schema(topic), indent=2, sort_keys=True) + "\n" for topic in sorted(TOPIC_TYPES)}


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from what the code generates."""
    out = []
    for name, text in render_all().items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> None:
    for path in write_all():
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
