"""Production brokers need SASL/TLS: the PERPLINE_KAFKA_* security variables reach every Kafka client,
the Quix Applications included, and nothing builds a client config past perpline.config.kafka_config."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from perpline import REPO_ROOT
from perpline.config import KAFKA_SECURITY_ENV, kafka_config, producer_config

SECURE = {"PERPLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "PERPLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
          "PERPLINE_KAFKA_SASL_USERNAME": "perpline", "PERPLINE_KAFKA_SASL_PASSWORD": "s3cret",
          "PERPLINE_KAFKA_SSL_CA_LOCATION": "/etc/perpline/ca.crt"}
WANTED = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "perpline",
          "sasl.password": "s3cret", "ssl.ca.location": "/etc/perpline/ca.crt"}


@pytest.fixture
def secure(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECURE.items():
        monkeypatch.setenv(name, value)


def test_every_variable_is_mapped() -> None:
    assert set(KAFKA_SECURITY_ENV.values()) == set(SECURE)


def test_plain_clients_carry_the_security_settings(secure: None) -> None:
    assert WANTED.items() <= kafka_config("redpanda:9093", **{"group.id": "g"}).items()
    assert WANTED.items() <= producer_config("redpanda:9093").items()


def test_none_are_sent_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECURE:
        monkeypatch.delenv(name, raising=False)
    assert kafka_config("127.0.0.1:19092") == {"bootstrap.servers": "127.0.0.1:19092"}


def test_quix_applications_connect_with_them(secure: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from perpline.pipelines.app import make_app  # noqa: PLC0415
    from perpline.pipelines.io import bootstrap_of  # noqa: PLC0415

    monkeypatch.setenv("PERPLINE_KAFKA_BOOTSTRAP", "redpanda:9093")
    app = make_app("perpline-test", state_dir=tmp_path)
    got = app.config.broker_address.as_librdkafka_dict()  # type: ignore[union-attr]
    assert {k: v.upper() if k == "security.protocol" else v for k, v in got.items()} == {
        "bootstrap.servers": "redpanda:9093", **WANTED}
    assert bootstrap_of(app) == "redpanda:9093"


def test_no_client_config_is_built_past_kafka_config() -> None:
    literal = re.compile(r"[\"']bootstrap\.servers[\"']")
    offenders = [str(path.relative_to(REPO_ROOT)) for path in (REPO_ROOT / "perpline").rglob("*.py")
                 if path.name != "config.py" and literal.search(path.read_text())]
    assert offenders == []
