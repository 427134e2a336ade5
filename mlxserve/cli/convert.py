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
        "*.safetensors, tokenizer files) into an MLX model in the store. No PyTorch needed. "
        "A CTranslate2 Whisper folder (model.bin, config.json, tokenizer) is copied as is.",
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
    parser.add_argument(
        "--mmproj",
        type=Path,
        metavar="FILE",
        help="a GGUF vision model's projector file: the .gguf SOURCE and it are registered "
        "together for the llama.cpp engine (not converted)",
    )
    parser.add_argument(
        "--base",
        metavar="PUBLISHER/NAME",
        help="SOURCE is a LoRA adapter folder, mlx-lm's (adapter_config.json, "
        "adapters.safetensors) or PEFT's (adapter_model.safetensors): store it beside this base "
        "model, served as BASE@NAME (NAME: --id, else the folder's name)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a model with this id")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def parse_model_command(parser: argparse.ArgumentParser, argv: list[str] | None):
    """(args, None) for a model-store command, or (None, exit status) after --help or a usage
    error; sets up the quiet logging such commands print under."""
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return None, 1
    except SystemExit as done:  # --help
        return None, int(done.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # transformers (used only for its tokenizer converters) warns on import that torch is absent
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return args, None


def main(argv: list[str] | None = None) -> int:
    args, status = parse_model_command(build_parser(), argv)
    if args is None:
        return status
    from mlxserve.models.convert import ConversionError, convert_model

    models_dir = args.models_dir or default_models_dir()
    started = time.monotonic()
    try:
        if args.base is not None:
            record = _import_adapter(args, models_dir)
            print(f"imported adapter {record.id}\n  path:         {record.path}")
            return 0
        if args.mmproj is not None:
            record = _register_vision_gguf(args, models_dir)
            print(f"registered {record.id} for llama.cpp (vision)\n  path:         {record.path}")
            return 0
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


def _import_adapter(args, models_dir: Path):
    from mlxserve.models.adapters import import_adapter
    from mlxserve.models.catalog import ModelCatalog
    from mlxserve.models.convert import ConversionError

    base = ModelCatalog(models_dir, discover_models=False).find(args.base)
    if base is None:
        raise ConversionError(f"no model {args.base} in {models_dir} to put the adapter beside")
    try:
        return import_adapter(args.source, base, args.model_id, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as error:
        raise ConversionError(str(error)) from error


def _register_vision_gguf(args, models_dir: Path):
    from mlxserve.models.convert import ConversionError, default_model_id
    from mlxserve.models.convert.gguf_reader import read_gguf
    from mlxserve.models.gguf_import import NotAProjector, register_gguf
    from mlxserve.models.store import find_model

    for path in (args.source, args.mmproj):
        if not path.is_file():
            raise ConversionError(f"{path} does not exist")
    model_id = args.model_id or default_model_id(args.source, read_gguf(args.source))
    if find_model(models_dir, model_id) is not None and not args.overwrite:
        raise ConversionError(f"model {model_id} exists; pass --overwrite to replace it")
    try:
        return register_gguf(args.source, models_dir, model_id, mmproj=args.mmproj)
    except NotAProjector as error:
        raise ConversionError(str(error)) from error


if __name__ == "__main__":
    sys.exit(main())
