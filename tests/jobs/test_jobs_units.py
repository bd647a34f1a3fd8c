"""Pure-Python parts of the contract: durations, params, result size, cheap registry import."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest

from nightshift_jobs.durations import format_duration, parse_duration
from nightshift_jobs.params import load_params, parse_override, validate_params
from nightshift_jobs.registry import BUILTIN_NAMES, builtin_names
from nightshift_jobs.runtime import TERMINATION_LIMIT, DataError, UsageError, build_result


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("240d", timedelta(days=240)),
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(minutes=90)),
        ("500ms", timedelta(milliseconds=500)),
        ("2w", timedelta(weeks=2)),
        ("15", timedelta(seconds=15)),
        (60, timedelta(minutes=1)),
    ],
)
def test_parse_duration(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["", "240x", "d", "1 h", "-5m", "1h-", True])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)  # type: ignore[arg-type]


def test_format_duration_round_trip() -> None:
    for text in ("240d", "1h30m", "90s", "500ms"):
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_override_values_are_json_when_possible() -> None:
    assert parse_override("batchSize=10") == ("batchSize", 10)
    assert parse_override("olderThan=240d") == ("olderThan", "240d")
    assert parse_override('tables=["a","b"]') == ("tables", ["a", "b"])
    with pytest.raises(UsageError):
        parse_override("novalue")
    assert load_params('{"a": 1, "b": 2}', {"b": 3}) == {"a": 1, "b": 3}
    with pytest.raises(UsageError):
        load_params("[1]", {})


def test_params_camel_and_snake_and_errors() -> None:
    from nightshift_jobs.builtins.ttl_cleanup import TtlCleanupParams

    camel = {"table": "t", "timestampColumn": "ts", "olderThan": "240d", "batchSize": 5000}
    snake = {"table": "t", "timestamp_column": "ts", "older_than": "240d", "batch_size": 5000}
    assert validate_params(TtlCleanupParams, camel) == validate_params(TtlCleanupParams, snake)
    with pytest.raises(UsageError, match="unknown parameter 'olderThen'"):
        validate_params(TtlCleanupParams, {**camel, "olderThen": "1d"})
    with pytest.raises(UsageError, match="missing required parameter 'table'"):
        validate_params(TtlCleanupParams, {k: v for k, v in camel.items() if k != "table"})
    with pytest.raises(DataError, match="olderThan"):
        validate_params(TtlCleanupParams, {**camel, "olderThan": "soon"})
    with pytest.raises(DataError, match="batchSize"):
        validate_params(TtlCleanupParams, {**camel, "batchSize": 0})


def test_result_fits_termination_message_limit() -> None:
    result = build_result(
        job="x", exit_code=1, message="é" * 10_000, counts={f"k{i}": i for i in range(50)}, duration_ms=5
    )
    encoded = json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(encoded) <= TERMINATION_LIMIT
    assert result["result"] == "failed" and result["counts"]["k0"] == 0
    huge_counts = build_result(
        job="x", exit_code=0, message="ok", counts={f"k{i:05}": i for i in range(2000)}, duration_ms=1
    )
    assert len(json.dumps(huge_counts, separators=(",", ":")).encode()) <= TERMINATION_LIMIT
    assert huge_counts["message"] == "ok"
    escapes = build_result(job="x", exit_code=1, message='"\x01' * 5000, counts={}, duration_ms=1)
    assert len(json.dumps(escapes, ensure_ascii=False, separators=(",", ":")).encode()) <= TERMINATION_LIMIT


def test_builtin_names_are_cheap_to_import() -> None:
    assert list(BUILTIN_NAMES) == builtin_names() == sorted(BUILTIN_NAMES)
    assert {
        "ttl-cleanup",
        "archive",
        "db-maintenance",
        "backup",
        "refresh-views",
        "sql",
        "health-check",
        "http",
    } == set(BUILTIN_NAMES)
    code = (
        "import sys; from nightshift_jobs.registry import BUILTIN_NAMES; "
        "print(sorted(m for m in ('psycopg', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_builtin_registers_under_its_name() -> None:
    from nightshift_jobs import registry

    for name in BUILTIN_NAMES:
        assert registry.get(name).name == name


def test_run_contract_is_the_runtime_s() -> None:
    """The runtime reads exactly the variables the contract names, and its exit codes are the contract's."""
    from nightshift_jobs import contract, runtime

    assert runtime.ExitCode is contract.ExitCode
    assert runtime.NON_RETRYABLE_EXIT_CODES == frozenset(contract.NON_RETRYABLE_EXIT_CODES)
    assert list(contract.NON_RETRYABLE_EXIT_CODES) == sorted(contract.NON_RETRYABLE_EXIT_CODES)
    env = {
        contract.ENV_RUN_ID: "r-1",
        contract.ENV_ATTEMPT: "2",
        contract.ENV_BACKGROUNDJOB: "cleanup",
        contract.ENV_NAMESPACE: "ns",
        contract.ENV_SCHEDULED_TIME: "2030-01-01T00:00:00Z",
    }
    assert runtime.RunInfo.from_env(env) == runtime.RunInfo("r-1", 2, "cleanup", "ns", "2030-01-01T00:00:00Z")
    assert set(contract.RUN_ENV) == {*env, contract.ENV_PARAMS}
    assert all(name.startswith("NIGHTSHIFT_") for name in contract.RUN_ENV)


def test_contract_imports_nothing_but_the_standard_library() -> None:
    code = (
        "import sys; import nightshift_jobs.contract; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('nightshift', 'pydantic', 'psycopg')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_params_model_is_the_builtin_s() -> None:
    from nightshift_jobs import registry
    from nightshift_jobs.builtins.ttl_cleanup import TtlCleanupParams

    assert registry.params_model("ttl-cleanup") is TtlCleanupParams
    with pytest.raises(KeyError):
        registry.params_model("no-such-job")


@pytest.mark.parametrize("bad", ["1.5h", "5M", " 5m"])
def test_param_durations_use_the_spec_grammar(bad: str) -> None:
    """Bare numbers are seconds; anything with a unit is the spec's grammar exactly."""
    with pytest.raises(ValueError):
        parse_duration(bad)
    assert parse_duration("1.5") == timedelta(seconds=1.5)
