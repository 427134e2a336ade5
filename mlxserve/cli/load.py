"""`mlxserve load`: load a stored model into a running server."""

from __future__ import annotations

import argparse
import json
import sys

from mlxserve.cli.client import Client, add_server_options, handle_errors
from mlxserve.families.syntax import SYNTAXES

LOAD_TIMEOUT_SECONDS = 900.0  # a large model can take minutes to load


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxserve load", description="Load a model from the store into a running server."
    )
    parser.add_argument("model", help="model id, e.g. google/gemma-3-270m")
    parser.add_argument("--context-length", type=int, help="context tokens to load")
    parser.add_argument("--ttl", type=float, help="unload after this many idle seconds")
    parser.add_argument(
        "--kv-bits", type=int, choices=(8, 4), help="quantize the KV cache to 8 or 4 bits"
    )
    parser.add_argument(
        "--kv-group-size", type=int, choices=(32, 64, 128), help="elements per scale (MLX)"
    )
    parser.add_argument("--identifier", help="the name requests use (default: the model id)")
    parser.add_argument(
        "--tool-format",
        choices=sorted(SYNTAXES),
        help="the tool-call syntax to read and constrain (default: found from the template)",
    )
    parser.add_argument("--json", action="store_true", help="print the server's JSON answer")
    add_server_options(parser)
    return parser


@handle_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fields = {
        "model": args.model,
        "context_length": args.context_length,
        "ttl": args.ttl,
        "identifier": args.identifier,
        "tool_format": args.tool_format,
        "kv_bits": args.kv_bits,
        "kv_group_size": args.kv_group_size,
    }
    body = {name: value for name, value in fields.items() if value is not None}
    result = Client(args).post("/api/v0/models/load", body, timeout=LOAD_TIMEOUT_SECONDS)
    if args.json:
        print(json.dumps(result, indent=2))
    elif result["already_loaded"]:
        print(f"{result['identifier']} is already loaded")
    else:
        ttl = f", ttl {result['ttl']:g} s" if result["ttl"] else ""
        kv = f", {result['kv_bits']}-bit KV" if result.get("kv_bits") else ""
        print(
            f"loaded {result['model']} as {result['identifier']} on {result['engine']} "
            f"(context {result['context_length']}{ttl}{kv}) in {result['load_time']:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
