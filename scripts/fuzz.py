"""A long schemathesis run against a real server on a tiny random model: requests generated from
the server's own OpenAPI document, every answer checked for 5xx and against the document.

    python scripts/fuzz.py [--examples N] [--seed S]

`--examples` is per operation (default 1000: about 10,000 requests over the routes).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import mlxserve  # noqa: E402,F401 - OpenBLAS before mlx.core
from tests.fuzzing import fuzz  # noqa: E402
from tests.server import ServerProcess  # noqa: E402
from tests.tiny_models import make_tiny_gemma  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    store = Path(tempfile.mkdtemp(prefix="fuzz-store-"))
    record = make_tiny_gemma(store / "test" / "tiny-gemma")
    started = time.monotonic()
    with ServerProcess(store, model=record.id, engine="mlx") as server:
        report = fuzz(server.base_url, args.examples, args.seed)
        alive = server.health() is not None
    statuses = ", ".join(f"{code}: {count}" for code, count in sorted(report.statuses.items()))
    print(f"{report.requests} requests in {time.monotonic() - started:.0f} s ({statuses})")
    print(f"{len(report.failures)} failures; server alive at the end: {alive}")
    for failure in report.failures[:20]:
        print("----", failure)
    return 0 if not report.failures and alive else 1


if __name__ == "__main__":
    sys.exit(main())
