"""The default model's conversion, run once per test session by the CLI in a child process that
reports its own time and peak memory (checked by tests/test_convert_llamacpp.py)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mlxserve.models.store import read_record


@dataclass
class Conversion:
    path: Path
    seconds: float
    peak_rss_bytes: int
    size_bytes: int


# Runs the CLI, then writes its own peak RSS in bytes as the last line of stderr. Read in the child:
# the kernel's ru_maxrss of a child counts the parent's pages it was forked with, and the test
# process may hold whole models by then.
CONVERT_AND_REPORT = """
import resource, sys
from pathlib import Path
from mlxserve.cli.convert import main
code = main(sys.argv[1:])
status = Path("/proc/self/status")
if status.exists():  # Linux: the high-water mark of this program's own memory, in kB
    peak = int(status.read_text().split("VmHWM:")[1].split()[0]) * 1024
else:  # macOS: bytes, counted from the program's start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(peak, file=sys.stderr)
sys.exit(code)
"""


def convert_measured(gguf: Path, models_dir: Path, model_id: str) -> Conversion:
    """`mlxserve convert` of `gguf` into the store at float32 on every platform, so the tests'
    comparisons with llama.cpp and mlx-lm hold the same everywhere."""
    arguments = [str(gguf), "--quantize", "none", "--models-dir", str(models_dir),
                 "--id", model_id, "--quiet"]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", CONVERT_AND_REPORT, *arguments], capture_output=True, text=True
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    peak_rss = int(result.stderr.strip().splitlines()[-1])
    record = read_record(Path(models_dir) / model_id)
    return Conversion(Path(record.path), seconds, peak_rss, record.size_bytes)
