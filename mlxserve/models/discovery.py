"""Models already on the machine, served in place: the Hugging Face cache (where mlx-lm,
mlx-vlm and `huggingface-cli download` put `mlx-community` and GGUF repos) and LM Studio's
models folder. Nothing is copied; a broken or partial download is skipped with a warning."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from mlxserve.checkpoints import DTYPE_LABELS, VISION_MODEL_TYPES
from mlxserve.models.gguf_import import gguf_metadata, gguf_model_type
from mlxserve.models.speech import is_whisper_folder, speech_record
from mlxserve.models.store import ModelRecord

log = logging.getLogger(__name__)

HF_CACHE, LMSTUDIO = "huggingface", "lmstudio"
# Later shards of a split GGUF: llama.cpp opens the first and finds the rest.
LATER_SHARD = re.compile(r"-0*([2-9]|\d{2,})-of-\d+\.gguf$")
# mlx-lm serves these model types under another module's name.
MLX_LM_ALIASES = {"mistral": "llama", "falcon_mamba": "mamba", "qwen2_5_vl": "qwen2_vl"}
_warned: set[Path] = set()


@dataclass(frozen=True)
class Roots:
    huggingface: Path | None
    lmstudio: Path | None


def default_roots(environ=os.environ, home: Path | None = None) -> Roots:
    """HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub; LM Studio's models
    folder as its settings record it, else ~/.lmstudio/models."""
    home = home or Path(environ.get("HOME") or Path.home())
    hub = environ.get("HF_HUB_CACHE")
    if not hub:
        hf_home = environ.get("HF_HOME") or home / ".cache" / "huggingface"
        hub = Path(hf_home) / "hub"
    return Roots(Path(hub), _lmstudio_folder(home))


def _lmstudio_folder(home: Path) -> Path:
    settings = home / ".lmstudio" / "settings.json"
    try:
        folder = json.loads(settings.read_text()).get("downloadsFolder")
    except (OSError, ValueError, AttributeError):
        folder = None
    return Path(folder).expanduser() if folder else home / ".lmstudio" / "models"


def discover(roots: Roots) -> list[ModelRecord]:
    """Every servable model under the roots, LM Studio's first; one id is listed once."""
    found: dict[str, ModelRecord] = {}
    for record in [*_lmstudio_models(roots.lmstudio), *_hub_models(roots.huggingface)]:
        found.setdefault(record.id, record)
    return list(found.values())


def _hub_models(cache: Path | None) -> list[ModelRecord]:
    if cache is None or not cache.is_dir():
        return []
    records = []
    for repo in sorted(cache.glob("models--*--*")):
        _, owner, name = repo.name.split("--", 2)
        snapshot = _snapshot(repo)
        if snapshot is not None:
            records += _models_in(snapshot, f"{owner}/{name}", HF_CACHE)
    return records


def _snapshot(repo: Path) -> Path | None:
    """The revision `main` points at, else the newest snapshot."""
    try:
        revision = (repo / "refs" / "main").read_text().strip()
        if (repo / "snapshots" / revision).is_dir():
            return repo / "snapshots" / revision
    except OSError:
        pass
    snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None


def _lmstudio_models(folder: Path | None) -> list[ModelRecord]:
    if folder is None or not folder.is_dir():
        return []
    records = []
    for directory in sorted(p for p in folder.glob("*/*") if p.is_dir()):
        records += _models_in(directory, f"{directory.parent.name}/{directory.name}", LMSTUDIO)
    return records


def _models_in(directory: Path, model_id: str, origin: str) -> list[ModelRecord]:
    """The models one repo directory holds: its GGUF files, or one MLX/Hugging Face model."""
    try:
        _check_complete(directory)
        ggufs = sorted(p for p in directory.glob("*.gguf") if not LATER_SHARD.search(p.name))
        projectors = [p for p in ggufs if p.name.lower().startswith("mmproj")]
        weights = [p for p in ggufs if p not in projectors]
        if weights:
            return _gguf_records(weights, projectors, model_id, origin)
        if is_whisper_folder(directory):
            return [speech_record(directory, model_id, origin)]
        if (directory / "config.json").exists():
            return [_checkpoint_record(directory, model_id, origin)]
    except (OSError, ValueError, KeyError) as exc:
        if directory not in _warned:  # once, not at every rescan
            _warned.add(directory)
            log.warning("skipping %s (%s): cannot be read (%s)", model_id, directory, exc)
    return []


def _gguf_records(
    weights: list[Path], projectors: list[Path], model_id: str, origin: str
) -> list[ModelRecord]:
    """One record per GGUF file; several quantizations of a repo are told apart by `@QUANT`."""
    projector = _preferred_projector(projectors)
    records = []
    for path in weights:
        stat = path.stat()
        meta = _header_of(path.resolve(), stat.st_mtime_ns, stat.st_size)
        quant = meta["quantization"] or path.stem.rsplit("-", 1)[-1]
        record_id = model_id if len(weights) == 1 else f"{model_id}@{quant}"
        records.append(
            ModelRecord(
                id=record_id,
                format="gguf",
                architecture=meta["architecture"],
                type=gguf_model_type(meta["pooling"], projector),
                quantization=quant,
                max_context_length=meta["context_length"],
                path=str(path.parent),
                gguf_file=path.name,
                mmproj_file=projector.name if projector else "",
                origin=origin,
            )
        )
    return records


@functools.lru_cache(maxsize=1024)
def _header_of(path: Path, mtime_ns: int, size: int) -> dict:
    """A GGUF header, read once per version of the file: reading one walks its whole
    vocabulary (about 0.15 s for Gemma's), and the folders are rescanned every few seconds."""
    return gguf_metadata(path)


def _preferred_projector(projectors: list[Path]) -> Path | None:
    """A repo may ship its projector in several precisions: f16 first, as LM Studio picks."""
    ranked = sorted(projectors, key=lambda p: ("f16" not in p.name.lower(), p.name))
    return ranked[0] if ranked else None


def _checkpoint_record(directory: Path, model_id: str, origin: str) -> ModelRecord:
    """An MLX or Hugging Face checkpoint; one mlx-lm or mlx-vlm cannot run is convertible."""
    config = json.loads((directory / "config.json").read_text())
    model_type = config["model_type"]
    safetensors = sorted(directory.glob("*.safetensors"))
    text_config = config.get("text_config") or config
    vision = "vision_config" in config and model_type in VISION_MODEL_TYPES
    servable = safetensors and (vision or _mlx_lm_serves(model_type))
    return ModelRecord(
        id=model_id,
        format="mlx" if servable else "hf",
        architecture=model_type.removesuffix("_text"),
        type="vlm" if vision else "llm",
        quantization=_quantization(config),
        max_context_length=int(text_config.get("max_position_embeddings") or 0),
        path=str(directory),
        origin=origin,
    )


def _mlx_lm_serves(model_type: str) -> bool:
    module = MLX_LM_ALIASES.get(model_type, model_type)
    return find_spec(f"mlx_lm.models.{module}") is not None


def _quantization(config: dict) -> str:
    quantization = config.get("quantization") or {}
    if quantization.get("bits"):
        return f"{quantization['bits']}bit"
    dtype = config.get("torch_dtype") or config.get("dtype") or "float32"
    return DTYPE_LABELS.get(str(dtype), str(dtype))


def _check_complete(directory: Path) -> None:
    """A cache entry whose blob never finished downloading is a dangling link."""
    missing = sorted(p.name for p in directory.iterdir() if not p.exists())
    if missing:
        raise ValueError(f"{', '.join(missing)} missing (an unfinished download?)")
