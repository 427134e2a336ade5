"""MLXSERVE_* yes/no variables read alike, and the suite's Linux-only tests skipping cleanly
where there is no /proc (checked with the platform faked as macOS)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mlxserve.cli.serve_options import build_parser
from mlxserve.environment import env_flag


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("YES", True), (" on ", True), ("0", False), ("false", False),
     ("no", False), ("off", False), ("", False), ("maybe", False)],
)  # fmt: skip
def test_env_flag_words(monkeypatch, value, expected):
    monkeypatch.setenv("MLXSERVE_NO_JIT", value)
    assert env_flag("NO_JIT") is expected
    assert build_parser().parse_args([]).no_jit is expected


def test_env_flags_off_when_set_to_zero(monkeypatch):
    for name in ("NO_JIT", "NO_DISCOVER", "ALLOW_REMOTE_IMAGES", "CORS"):
        monkeypatch.setenv(f"MLXSERVE_{name}", "0")
    args = build_parser().parse_args([])
    assert (args.no_jit, args.no_discover, args.allow_remote_images, args.cors) == (
        False, False, False, None,
    )  # fmt: skip
    monkeypatch.setenv("MLXSERVE_CORS", "1")
    assert build_parser().parse_args([]).cors == "*"


LINUX_ONLY = [
    "tests/test_llamacpp_process.py::test_supervised_binary_dies_when_the_pipe_closes",
    "tests/test_llamacpp_server.py",
]


def test_linux_only_tests_skip_on_macos():
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *LINUX_ONLY]
    fake_macos = {**os.environ, "MLXSERVE_TEST_PLATFORM": "darwin"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=fake_macos)
    assert result.returncode == 0, result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    assert "skipped" in summary and "passed" not in summary and "failed" not in summary
