"""Writing a model directory: safetensors shards written as tensors arrive, and a staging
directory that becomes the model directory by one rename, or vanishes on any failure."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from mlxserve.models.convert.errors import ConversionError
from mlxserve.models.store import MANIFEST
from mlxserve.processes import process_exists

log = logging.getLogger(__name__)

MAX_SHARD_BYTES = 2 << 30
STAGING_PREFIX = ".converting-"


class ShardWriter:
    """Collects tensors and flushes a shard whenever it passes `max_shard_bytes`, so memory
    holds at most one shard; names the files as mlx-lm's save_model does."""

    def __init__(self, directory: Path, max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
        self.directory = directory
        self.max_shard_bytes = max_shard_bytes
        self.pending: dict = {}
        self.pending_bytes = 0
        self.shard_files: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0
        self.names: set[str] = set()

    def add(self, tensors: dict) -> None:
        import mlx.core as mx

        mx.eval(list(tensors.values()))
        for name, array in tensors.items():
            self.pending[name] = array
            self.pending_bytes += array.nbytes
            self.names.add(name)
        if self.pending_bytes >= self.max_shard_bytes:
            self.flush()

    def flush(self) -> None:
        import mlx.core as mx

        if not self.pending:
            return
        path = self.directory / f"partial-{len(self.shard_files):05d}.safetensors"
        mx.save_safetensors(str(path), self.pending, metadata={"format": "mlx"})
        self.shard_files.append((path, sorted(self.pending)))
        self.total_bytes += self.pending_bytes
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> None:
        """Flush the last shard, give shards their final names and write the index."""
        self.flush()
        count = len(self.shard_files)
        weight_map = {}
        for index, (path, names) in enumerate(self.shard_files, start=1):
            final = (
                "model.safetensors"
                if count == 1
                else f"model-{index:05d}-of-{count:05d}.safetensors"
            )
            path.rename(self.directory / final)
            weight_map.update(dict.fromkeys(names, final))
        index_data = {
            "metadata": {"total_size": self.total_bytes},
            "weight_map": dict(sorted(weight_map.items())),
        }
        (self.directory / "model.safetensors.index.json").write_text(
            json.dumps(index_data, indent=2)
        )


@contextlib.contextmanager
def staged_model_dir(final_dir: Path, models_dir: Path, overwrite: bool) -> Iterator[Path]:
    """Yield an empty staging directory inside `models_dir`; on success it replaces `final_dir`,
    on any exception (Ctrl-C included) it is removed and `final_dir` is left as it was."""
    if final_dir.exists() and not overwrite:
        raise ConversionError(f"{final_dir} already exists (use overwrite to replace it)")
    models_dir.mkdir(parents=True, exist_ok=True)
    recover_interrupted(models_dir)
    prefix = f"{STAGING_PREFIX}{os.getpid()}-"  # its owner, for the clean-up after a crash
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=models_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; a model directory is an ordinary one
    try:
        yield staging
        _replace(staging, final_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(staging: Path, final_dir: Path) -> None:
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    if not final_dir.exists():
        staging.rename(final_dir)
        return
    # One level deep under models_dir, so the store's publisher/name scan never sees it.
    retired = staging.parent / f"{STAGING_PREFIX}old-{uuid.uuid4().hex}"
    final_dir.rename(retired)
    staging.rename(final_dir)
    shutil.rmtree(retired, ignore_errors=True)


def recover_interrupted(models_dir: Path) -> None:
    """Undo what a killed conversion left: a model moved aside for its replacement goes back
    (the crash came between the two renames), and staging directories of dead processes go."""
    for leftover in models_dir.glob(f"{STAGING_PREFIX}*"):
        owner = leftover.name.removeprefix(STAGING_PREFIX).split("-")[0]
        if owner == "old":
            _restore_retired(leftover, models_dir)
        elif owner.isdigit() and not process_exists(int(owner)):
            shutil.rmtree(leftover, ignore_errors=True)


def _restore_retired(retired: Path, models_dir: Path) -> None:
    try:
        model_id = json.loads((retired / MANIFEST).read_text())["id"]
    except (OSError, ValueError, KeyError):
        return  # not a whole model: nothing to restore
    publisher, _, name = model_id.partition("/")
    final_dir = models_dir / publisher / name
    if final_dir.exists():
        shutil.rmtree(retired, ignore_errors=True)  # the replacement landed
    else:
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        retired.rename(final_dir)
        log.warning("restored %s, which an interrupted conversion had moved aside", model_id)


def directory_size(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
