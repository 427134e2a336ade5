"""The default model's conversion, run once per test session by the CLI in a child process that
reports its own time and peak memory (checked by tests/test_convert_llamacpp.py)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlxserve.models.store import read_record


@dataclass
class Conversion:
    path: Path
    seconds: float
    peak_rss_bytes: int
    size_bytes: int


# Runs the CLI, then writes its own time in seconds (from its first import) and peak RSS in bytes
# as the last line of stderr. Read in the child: the kernel's ru_maxrss of a child counts the
# parent's pages it was forked with, and the test process may hold whole models by then; and the
# run may ask for the result long after the conversion ended.
CONVERT_AND_REPORT = """
import time
started = time.monotonic()
import resource, sys
from pathlib import Path
from mlxserve.cli.convert import main
code = main(sys.argv[1:])
seconds = time.monotonic() - started
status = Path("/proc/self/status")
if status.exists():  # Linux: the high-water mark of this program's own memory, in kB
    peak = int(status.read_text().split("VmHWM:")[1].split()[0]) * 1024
else:  # macOS: bytes, counted from the program's start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(seconds, peak, file=sys.stderr)
sys.exit(code)
"""


class ConversionRun:
    """`mlxserve convert` of `gguf` into the store at float32 on every platform (so the tests'
    comparisons with llama.cpp and mlx-lm hold the same everywhere), started in a child process;
    `result()` waits for it."""

    def __init__(self, gguf: Path, models_dir: Path, model_id: str):
        arguments = [str(gguf), "--quantize", "none", "--models-dir", str(models_dir),
                     "--id", model_id, "--quiet"]  # fmt: skip
        self.models_dir, self.model_id = Path(models_dir), model_id
        # Files, not pipes: nobody reads the output until the run needs the model.
        self._stdout, self._stderr = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self._process = subprocess.Popen(
            [sys.executable, "-c", CONVERT_AND_REPORT, *arguments],
            stdout=self._stdout,
            stderr=self._stderr,
            text=True,
        )

    def result(self) -> Conversion:
        code = self._process.wait()
        stdout, stderr = (self._read(output) for output in (self._stdout, self._stderr))
        assert code == 0, stdout + stderr
        seconds, peak_rss = stderr.strip().splitlines()[-1].split()
        record = read_record(self.models_dir / self.model_id)
        return Conversion(Path(record.path), float(seconds), int(peak_rss), record.size_bytes)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    @staticmethod
    def _read(output) -> str:
        output.seek(0)
        return output.read()
