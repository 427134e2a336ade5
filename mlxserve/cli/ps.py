"""`mlxserve ps`: the models a running server has loaded."""

from __future__ import annotations

import argparse
import json
import sys

from mlxserve.cli.client import (
    Client,
    add_server_options,
    format_bytes,
    format_table,
    handle_errors,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxserve ps", description="List the models loaded in a running server."
    )
    add_server_options(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    return parser


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


@handle_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    loaded = Client(args).get("/api/v0/loaded")
    if args.json:
        print(json.dumps(loaded["data"], indent=2))
        return 0
    if not loaded["data"] and not loaded["loading"]:
        print("no models loaded")
        return 0
    headers = ["IDENTIFIER", "MODEL", "ENGINE", "CONTEXT", "MEMORY (EST.)", "IDLE", "TTL"]
    rows = [
        [
            m["identifier"],
            m["model"],
            m["engine"],
            str(m["context_length"]),
            format_bytes(m["memory_bytes"]),
            "busy" if m["active_requests"] else format_seconds(m["idle_seconds"]),
            format_seconds(m["ttl"]),
        ]
        for m in loaded["data"]
    ]
    rows += [[model, "", "", "", "", "loading", ""] for model in loaded["loading"]]
    print(format_table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
