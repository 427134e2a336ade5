"""`mlxserve unload`: unload one loaded model, or all of them."""

from __future__ import annotations

import argparse
import sys

from mlxserve.cli.client import Client, add_server_options, handle_errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxserve unload", description="Unload models from a running server."
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("identifier", nargs="?", help="the loaded model's identifier")
    target.add_argument("--all", action="store_true", help="unload every loaded model")
    add_server_options(parser)
    return parser


@handle_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client = Client(args)
    if args.all:
        identifiers = [m["identifier"] for m in client.get("/api/v0/loaded")["data"]]
        if not identifiers:
            print("no models loaded")
    else:
        identifiers = [args.identifier]
    for identifier in identifiers:
        client.post("/api/v0/models/unload", {"identifier": identifier})
        print(f"unloaded {identifier}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
