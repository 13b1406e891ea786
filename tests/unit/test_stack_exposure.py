"""`perpline up` keeps the API on loopback while the embedded broker (no authentication) is in use,
and gives the components the embedded ClickHouse's users: the admin to writers, the reader to the API."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from perpline.ch.users import USERS_DIR_NAME
from perpline.stack import up


@pytest.fixture(autouse=True)
def embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PERPLINE_KAFKA_BOOTSTRAP", "PERPLINE_CLICKHOUSE_URL", "PERPLINE_API_HOST"):
        monkeypatch.delenv(name, raising=False)

    def no_stack(*_args: object) -> None:
        raise AssertionError("perpline up went on to start the stack")

    monkeypatch.setattr(up, "Supervisor", no_stack)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "exchange.example.com"])
def test_a_non_loopback_api_host_is_refused_with_the_embedded_broker(
        host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        up.main(["--api-host", host, "--data-dir", str(tmp_path / "data"), "--free-ports"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "no authentication" in err and up.OPEN_BROKER_FLAG in err and "account.commands" in err
    assert not (tmp_path / "data").exists()  # refused before anything was prepared or started


def test_the_environment_cannot_slip_past_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERPLINE_API_HOST", "0.0.0.0")
    with pytest.raises(SystemExit) as done:
        up.main(["--data-dir", str(tmp_path / "data")])
    assert done.value.code == 2


def _plan(tmp_path: Path, api_host: str | None = None) -> up.Plan:
    return up.make_plan(argparse.Namespace(demo=False, data_dir=str(tmp_path), api_host=api_host, api_port=None,
                                           free_ports=True, kafka_port=None, clickhouse_port=None))


def test_loopback_passes_and_the_flag_allows_an_open_host(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert up.exposure_refusal(_plan(tmp_path, host), broker_open_ok=False) is None
    open_plan = _plan(tmp_path, "0.0.0.0")
    assert up.exposure_refusal(open_plan, broker_open_ok=False) is not None
    assert up.exposure_refusal(open_plan, broker_open_ok=True) is None


def test_an_external_broker_may_serve_any_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERPLINE_KAFKA_BOOTSTRAP", "redpanda:9092")
    assert up.exposure_refusal(_plan(tmp_path, "0.0.0.0"), broker_open_ok=False) is None


def test_writers_get_the_admin_the_api_the_reader_and_everything_binds_loopback(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    up.prepare(plan)
    specs = {spec.name: spec for spec in up.components(plan)}
    admin, reader = plan.ch_passwords["default"], plan.ch_passwords["auditor"]
    assert admin != reader and (tmp_path / USERS_DIR_NAME / "default.password").read_text() == admin
    for name in ("ledger-sink", "recon", "matcher"):
        assert specs[name].env["PERPLINE_CLICKHOUSE_URL"].startswith(f"http://default:{admin}@127.0.0.1:")
    assert specs["api"].env["PERPLINE_CLICKHOUSE_URL"].startswith(f"http://auditor:{reader}@127.0.0.1:")
    assert specs["broker"].argv[specs["broker"].argv.index("--host") + 1] == "127.0.0.1"
    assert specs["clickhouse"].argv[specs["clickhouse"].argv.index("--host") + 1] == "127.0.0.1"
    up.prepare(plan)  # a restart keeps the passwords: notebooks keep their URL
    assert plan.ch_passwords["default"] == admin
