"""Contract tests generated from the API's own OpenAPI schema (schemathesis) against the real stack:
whatever the input, no 5xx, the status code is one the schema documents, and the body matches it.

The caller is identified by X-Account-Id (the embedded stack trusts it), so the trading and account
endpoints run their real handlers rather than stopping at authentication."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from stackutil import Stack, admin, running_stack

pytestmark = pytest.mark.e2e
EXAMPLES = 12


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory)


@pytest.fixture(scope="module")
def user(stack: Stack) -> int:
    made = admin(stack, "create-user", "--deposit", "USDT=100000")
    assert isinstance(made, dict)
    return int(made["user_id"])


def test_every_operation_keeps_its_contract(stack: Stack, user: int) -> None:
    """Each operation of /openapi.json gets EXAMPLES generated requests (schemathesis' pytest plugin
    does not load under this pytest, so the operations are driven with Hypothesis directly)."""
    schema = schemathesis.openapi.from_url(f"{stack.api}/openapi.json")
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=stack.api, headers={"X-Account-Id": str(user)}, timeout=30,
                                   checks=[not_a_server_error, status_code_conformance, response_schema_conformance])

        try:
            call()
        except BaseException as failure:  # noqa: BLE001 (collect every failure, then report all; hypothesis raises a group)
            failures[operation.label] = str(failure)[:1500]
    assert operations > 30
    assert not failures, "\n\n".join(f"{label}:\n{why}" for label, why in failures.items())
