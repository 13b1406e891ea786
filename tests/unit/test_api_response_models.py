"""Response bodies in /openapi.json: the conformance check the contract test runs
(tests/e2e/test_api_contract.py) fails on a 200 body that does not match its documented model, and
the documented routes' models are what their renderers return."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import response_schema_conformance

from perpline.api import models
from perpline.api.app import ApiDeps, create_app
from perpline.api.models import ok


def conformance_failure(app: FastAPI) -> str | None:
    """Run every operation of `app` through the contract test's response check; the failure, or None."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[response_schema_conformance])

        try:
            call()
        except BaseException as failure:  # noqa: BLE001 (hypothesis raises a group)
            return str(failure)
    return None


def app_answering(body: dict[str, Any]) -> FastAPI:
    app = FastAPI()

    @app.get("/fapi/v1/time", responses=ok(models.ServerTime))
    def server_time() -> Any:
        return body

    return app


def test_a_right_body_passes_the_check() -> None:
    assert conformance_failure(app_answering({"serverTime": 1})) is None


@pytest.mark.parametrize("wrong", [{"serverTime": "1"}, {"servertime": 1}, {"serverTime": 1, "extra": 0}])
def test_a_wrong_body_fails_the_check(wrong: dict[str, Any]) -> None:
    failure = conformance_failure(app_answering(wrong))
    assert failure is not None and "schema" in failure.lower()


NOT_JSON = {("get", "/metrics")}  # Prometheus text; the websockets and the static files are not operations


def test_every_json_operation_documents_its_success_body() -> None:
    """Every operation of /openapi.json but the listed non-JSON ones has a 200 schema that says more
    than its title (FastAPI's schema of an undocumented body is {"title": ...} only)."""
    spec = create_app(ApiDeps(bootstrap="unused:1", topics={}, wait_s=0.1)).openapi()
    operations = [(method, path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]
    undocumented = []
    for method, path, op in operations:
        content = op["responses"]["200"]["content"]
        if (method, path) in NOT_JSON:
            assert set(content) == {"text/plain"}, (method, path)
            continue
        if not set(content.get("application/json", {}).get("schema", {})) - {"title"}:
            undocumented.append(f"{method.upper()} {path}")
    assert len(operations) >= 71 and not undocumented, undocumented


def test_a_repair_record_documents_exactly_the_columns_the_audit_shows() -> None:
    """One list of the repair record's fields (perpline.recon.repair_columns): the reconciler writes it,
    the audit reads it, the API documents it; a column added to one and not the others fails here."""
    from perpline.api.models import RepairRecord  # noqa: PLC0415
    from perpline.audit import REPAIR_COLUMNS  # noqa: PLC0415
    from perpline.recon.repairs import COLUMNS  # noqa: PLC0415

    assert tuple(RepairRecord.model_fields) == REPAIR_COLUMNS
    assert tuple(COLUMNS) == (*REPAIR_COLUMNS, "updated_ms")
