"""Fuzzing a running server from its own OpenAPI document with schemathesis: every operation gets
generated requests, and each answer must be no server error and must match the document."""

from __future__ import annotations

from dataclasses import dataclass, field

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import checks

CHECKS = [
    checks.not_a_server_error,
    checks.response_schema_conformance,
    checks.content_type_conformance,
    checks.status_code_conformance,
]
# An open-ended feed: it never ends by itself, so it cannot be fuzzed request by request.
ENDLESS = {"/api/v0/log/stream"}


@dataclass
class FuzzReport:
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def fuzz(base_url: str, examples: int, seed: int = 0) -> FuzzReport:
    """Send `examples` generated requests to each operation; collect statuses and failures."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    report = FuzzReport()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in ENDLESS:
            continue
        _fuzz_operation(operation, base_url, examples, seed, report)
    return report


def _fuzz_operation(operation, base_url: str, examples: int, seed: int, report: FuzzReport):
    @settings(
        max_examples=examples,
        derandomize=False,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case):
        report.requests += 1
        try:
            response = case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=120)
            report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
        except BaseException as exc:  # schemathesis raises failure groups; all are collected
            if isinstance(exc, KeyboardInterrupt):
                raise
            report.failures.append(f"{operation.method.upper()} {operation.path}: {exc}"[:2000])

    from hypothesis import seed as hypothesis_seed

    hypothesis_seed(seed)(run)()
