"""`mlxserve ls`: the models on disk, in the store or found in place, loaded or not (no server
needed)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlxserve.cli.client import format_bytes, format_table
from mlxserve.environment import env_flag
from mlxserve.models.catalog import ModelCatalog
from mlxserve.models.store import ModelRecord, default_models_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxserve ls", description="List the models in the store, loaded or not."
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="model store (default: $MLXSERVE_MODELS_DIR or $MLXSERVE_HOME/models)",
    )
    parser.add_argument(
        "--no-discover",
        action="store_true",
        default=env_flag("NO_DISCOVER"),
        help="only the store's models, not those in the Hugging Face cache or LM Studio's folder",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    return parser


def describe(record: ModelRecord) -> dict:
    return {
        "id": record.id,
        "type": record.type,
        "format": record.format,
        "quantization": record.quantization,
        "arch": record.architecture,
        "max_context_length": record.max_context_length,
        "size_bytes": record.size_bytes,
        "source": record.origin,
        "path": record.path,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    models_dir = (args.models_dir or default_models_dir()).expanduser()
    catalog = ModelCatalog(models_dir, discover_models=not args.no_discover)
    models = [describe(record) for record in catalog.list()]
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    if not models:
        print(f"no models in {models_dir}")
        return 0
    headers = ["ID", "SIZE", "FORMAT", "QUANT", "ARCH", "TYPE", "CONTEXT", "SOURCE"]
    rows = [
        [
            m["id"],
            format_bytes(m["size_bytes"]),
            m["format"],
            m["quantization"],
            m["arch"],
            m["type"],
            str(m["max_context_length"] or "?"),
            m["source"],
        ]
        for m in models
    ]
    print(format_table(headers, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
