"""`mlxserve convert SOURCE`: turn a GGUF file or a Hugging Face directory into an MLX model."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from mlxserve.cli.client import format_bytes
from mlxserve.models.store import default_models_dir

log = logging.getLogger("mlxserve")


class UsageError(Exception):
    pass


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad arguments end like every other failure: one `error: ...` line and exit status 1."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="mlxserve convert",
        description="Convert a .gguf file or a Hugging Face model directory (config.json, "
        "*.safetensors, tokenizer files) into an MLX model in the store. No PyTorch needed.",
    )
    parser.add_argument("source", type=Path, help="a .gguf file or a Hugging Face model directory")
    parser.add_argument(
        "--id",
        dest="model_id",
        metavar="PUBLISHER/NAME",
        help="model id in the store (default: from the GGUF metadata or the directory name)",
    )
    parser.add_argument(
        "--quantize",
        choices=("4", "8", "bf16", "f16", "none"),
        default="none",
        help="4/8: MLX affine quantization; bf16/f16: cast; none: keep float32 "
        "(GGUF) or the checkpoint's dtype (default: none)",
    )
    parser.add_argument(
        "--group-size",
        type=int,
        choices=(32, 64, 128),
        default=64,
        help="quantization group size (default: 64)",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="model store (default: $MLXSERVE_HOME/models, ~/.mlxserve/models)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a model with this id")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except SystemExit as done:  # --help
        return int(done.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # transformers (used only for its tokenizer converters) warns on import that torch is absent
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from mlxserve.models.convert import ConversionError, convert_model

    models_dir = args.models_dir or default_models_dir()
    started = time.monotonic()
    try:
        record = convert_model(
            args.source,
            models_dir,
            args.model_id,
            quantize=args.quantize,
            group_size=args.group_size,
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    print(
        f"converted {record.id}\n"
        f"  path:         {record.path}\n"
        f"  architecture: {record.architecture}\n"
        f"  quantization: {record.quantization}\n"
        f"  size on disk: {format_bytes(record.size_bytes)}\n"
        f"  time:         {time.monotonic() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
