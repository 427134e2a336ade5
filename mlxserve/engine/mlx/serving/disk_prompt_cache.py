"""Prompt KV state kept on disk, so that a long prefix read once (a system prompt, tool
definitions, a document) is not read again after a restart, or after the memory cache let it go.

A prompt is stored in blocks of BLOCK tokens as it is prefilled: a block's file holds every
layer's keys and values for its own tokens only, so a prefix of n tokens costs n tokens of disk
however many blocks it has. A file is named by the hash of all tokens up to its block's end, so
it only ever matches the exact prefix it was computed from. A new prompt starts from the longest
run of stored blocks at its start when that is longer than what the memory cache holds: their
keys and values are read into a fresh cache, where a sliding-window layer keeps its window. A
quantized layer's blocks hold its quantized parts (`kv_bits` names the folder, so a block is only
ever read back into the kind of layer that wrote it).

Each file carries a CRC32 of its arrays; a file that fails to load or to check is deleted and
ignored. Every model's folder sits under one root, bounded in bytes all together, the least
recently used file going first; a folder whose model was converted again or removed (its
source.json names a config.json that changed or is gone) is deleted when a cache opens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zlib
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_map
from mlx_lm.models.cache import KVCache, QuantizedKVCache

log = logging.getLogger(__name__)

BLOCK = 512  # tokens per file; a multiple of the prefill chunk, so blocks end where chunks do
SUFFIX = ".safetensors"
SOURCE = "source.json"  # the model a folder's blocks were computed with


class DiskPromptCache:
    """One model's blocks, in `root`/`name`, made by the first block written; `source` is the
    model's config.json, whose change makes the folder stale. Opened off the event loop."""

    def __init__(self, root: Path, name: str, max_bytes: int, source: Path | None = None):
        self.root, self.directory = Path(root), Path(root) / name
        self.max_bytes = max_bytes  # for every folder under root together
        self.source = source
        self.blocks_written = 0
        self.blocks_read = 0
        remove_stale_folders(self.root)

    def stored_prefix(self, names: list[str]) -> list[str]:
        """Of a prompt's block names (block_names), those stored at its start, in order."""
        stored = []
        for name in names:
            if not self.has(name):
                break
            stored.append(name)
        return stored

    def load(self, names: list[str], cache: list) -> int:
        """Fill an empty cache from stored blocks; the tokens it then holds (0 when the first
        block is unreadable: the blocks after a bad one are not used)."""
        blocks = []
        for name in names:
            arrays = self._read(name)
            if arrays is None:
                break
            blocks.append(arrays)
        for index, layer in enumerate(cache):
            if not blocks:
                break
            keys, values = (
                _concatenate([_stored(block, f"{index}.{part}") for block in blocks])
                for part in ("keys", "values")
            )
            if isinstance(keys, tuple):
                layer.fill(keys, values)
            else:
                layer.update_and_fetch(keys, values)
        mx.eval([layer.state for layer in cache])
        self.blocks_read += len(blocks)
        return len(blocks) * BLOCK

    def write(self, name: str, layers: list[tuple]) -> None:
        """Store one block's keys and values (layer by layer; a quantized layer's as its three
        parts), then keep within the bound."""
        arrays = {}
        for index, (keys, values) in enumerate(layers):
            for part, stored in (("keys", keys), ("values", values)):
                if isinstance(stored, tuple):
                    arrays |= {f"{index}.{part}.{j}": array for j, array in enumerate(stored)}
                else:
                    arrays[f"{index}.{part}"] = stored
        mx.eval(arrays)
        staged = self.directory / f".{name}.{os.getpid()}.tmp{SUFFIX}"
        metadata = {"prefix": name, "crc32": str(_crc32(arrays))}
        try:
            self._make_folder()
            mx.save_safetensors(str(staged), arrays, metadata)
            os.replace(staged, self._path(name))
        except OSError as exc:  # a full disk loses the block, never the request
            log.warning("prompt cache block not written: %s", exc)
            staged.unlink(missing_ok=True)
            return
        self.blocks_written += 1
        self._evict()

    def has(self, name: str) -> bool:
        return self._path(name).is_file()

    def _read(self, name: str) -> dict | None:
        path = self._path(name)
        try:
            arrays, metadata = mx.load(str(path), return_metadata=True)
            if metadata.get("prefix") != name or metadata.get("crc32") != str(_crc32(arrays)):
                raise ValueError("its contents do not match its checksum")
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("ignoring prompt cache file %s (%s); deleted", path.name, exc)
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recently used: evicted last
        return arrays

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}{SUFFIX}"

    def _make_folder(self) -> None:
        if self.directory.is_dir():
            return
        self.directory.mkdir(parents=True)
        if self.source is not None:
            written = {"config": str(self.source), "mtime_ns": self.source.stat().st_mtime_ns}
            (self.directory / SOURCE).write_text(json.dumps(written))

    def _evict(self) -> None:
        """Least recently used files first, across every model's folder; emptied folders go."""
        files = []
        for path in self.root.glob(f"*/*{SUFFIX}"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        emptied = set()
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            emptied.add(path.parent)
        for folder in emptied - {self.directory}:
            if not any(folder.glob(f"*{SUFFIX}")):
                shutil.rmtree(folder, ignore_errors=True)


def remove_stale_folders(root: Path) -> None:
    """Delete the folders whose model is gone or was converted again since they were written."""
    if not root.is_dir():
        return
    for source in root.glob(f"*/{SOURCE}"):
        try:
            written = json.loads(source.read_text())
            current = Path(written["config"]).stat().st_mtime_ns
        except (OSError, ValueError, KeyError, TypeError):
            current = None  # the model is gone (or the note unreadable)
        if current is None or current != written.get("mtime_ns"):
            log.info("removing the prompt cache of a model that changed: %s", source.parent.name)
            shutil.rmtree(source.parent, ignore_errors=True)


class BlockWriter:
    """Collects the keys and values each prefill chunk adds and stores every whole block the
    prefill read itself (a block begun in a cache it started from is not whole here)."""

    def __init__(self, store: DiskPromptCache, names: list[str], start: int):
        self.store = store
        self.names = names  # the prompt's block_names
        self.first = -(-start // BLOCK)  # the first block that starts at or after `start`
        self._chunks: list[list[tuple]] = []  # per chunk, each layer's (keys, values)

    def add(self, cache: list, start: int, end: int) -> None:
        block = start // BLOCK
        if block < self.first or block >= len(self.names) or self.store.has(self.names[block]):
            return
        # Copied: the layer writes its next tokens into the same buffer.
        self._chunks.append([_copy(_newest(layer, end - start)) for layer in cache])
        if end % BLOCK == 0:
            layers = [_concatenate([c[i] for c in self._chunks]) for i in range(len(cache))]
            self._chunks = []
            self.store.write(self.names[block], layers)


def block_names(tokens: list[int]) -> list[str]:
    """One name per whole block of `tokens`: the hash of every token up to the block's end."""
    digest = hashlib.sha256()
    names = []
    for end in range(BLOCK, len(tokens) + 1, BLOCK):
        digest.update(np.asarray(tokens[end - BLOCK : end], dtype=np.int64).tobytes())
        names.append(digest.copy().hexdigest()[:40])
    return names


def _newest(layer, count: int) -> tuple:
    """The keys and values of the last `count` tokens a prefill step added to a layer (after a
    multi-token step, a sliding-window layer holds its tokens in order, the newest last)."""
    growing = isinstance(layer, (KVCache, QuantizedKVCache))
    end = layer.offset if growing else layer.keys.shape[2]
    return tree_map(lambda part: part[..., end - count : end, :], (layer.keys, layer.values))


def _copy(pair: tuple) -> tuple:
    copied = tree_map(mx.array, pair)
    mx.eval(copied)
    return copied


def _concatenate(runs: list):
    """Runs of positions (arrays, or quantized parts alike) joined along the token axis."""
    return tree_map(lambda *parts: mx.concatenate(parts, axis=2), *runs)


def _stored(block: dict, name: str):
    """A layer's keys or values in a block: one array, or a quantized layer's three parts."""
    if name in block:
        return block[name]
    return tuple(block[f"{name}.{j}"] for j in range(3))


def _crc32(arrays: dict[str, mx.array]) -> int:
    crc = 0
    for key in sorted(arrays):
        crc = zlib.crc32(np.asarray(arrays[key].view(mx.uint8)), crc)
    return crc
