"""The MLX embedding engine: a BERT encoder on its own inference thread, batched."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlx.core as mx
import numpy as np
from tokenizers import Tokenizer

from mlxserve.engine.base import EngineModel, InvalidRequest
from mlxserve.engine.mlx.architectures.bert import BertConfig, BertModel

BATCH_SIZE = 32  # sentences per forward pass; padded to the longest in the batch


class MLXEmbeddingModel(EngineModel):
    engine_name = "mlx"

    def __init__(
        self,
        model_id: str,
        path: Path,
        context_length: int,
        executor: ThreadPoolExecutor,
        model,
    ):
        self.model_id = model_id
        self._executor = executor  # its single thread owns every MLX call for this model
        self._model = model
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.context_length = context_length
        self.tokenizer.enable_truncation(self.context_length)
        self.tokenizer.no_padding()

    @classmethod
    async def load(cls, model_id: str, path: Path, context_length: int) -> MLXEmbeddingModel:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlx-embed")
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(executor, cls._load_model, path)
        return cls(model_id, path, context_length, executor, model)

    @staticmethod
    def _load_model(path: Path) -> BertModel:
        model = BertModel(BertConfig.from_dict(json.loads((path / "config.json").read_text())))
        weights = BertModel.sanitize(mx.load(str(path / "model.safetensors")))
        model.load_weights(list(weights.items()))
        mx.eval(model.parameters())
        return model

    async def embed(self, inputs: list[str] | list[list[int]]) -> tuple[np.ndarray, int]:
        """Unit-length vectors, one row per input, and the number of tokens read."""
        if inputs and isinstance(inputs[0], str):
            token_lists = [e.ids for e in self.tokenizer.encode_batch(inputs)]
        else:
            token_lists = [list(tokens)[: self.context_length] for tokens in inputs]
        vocab = self.tokenizer.get_vocab_size()
        if any(not 0 <= t < vocab for tokens in token_lists for t in tokens):
            raise InvalidRequest(f"token ids must be in [0, {vocab})", "input")
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(self._executor, self._encode_all, token_lists)
        return vectors, sum(len(tokens) for tokens in token_lists)

    def _encode_all(self, token_lists: list[list[int]]) -> np.ndarray:
        order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
        out = np.zeros(
            (len(token_lists), self._model.embeddings.word_embeddings.weight.shape[1]),
            dtype=np.float32,
        )
        for start in range(0, len(order), BATCH_SIZE):
            rows = order[start : start + BATCH_SIZE]  # similar lengths together: little padding
            width = max(len(token_lists[i]) for i in rows) or 1
            ids = np.zeros((len(rows), width), dtype=np.int32)
            mask = np.zeros((len(rows), width), dtype=np.int32)
            for r, i in enumerate(rows):
                ids[r, : len(token_lists[i])] = token_lists[i]
                mask[r, : len(token_lists[i])] = 1
            out[rows] = np.array(self._model(mx.array(ids), mx.array(mask)))
        return out

    def generate(self, request):
        raise InvalidRequest(
            f"model '{self.model_id}' is an embedding model; use /v1/embeddings", "model"
        )

    async def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    async def close(self) -> None:
        self._executor.shutdown(wait=True)

    def runtime_info(self) -> dict:
        return {"name": "mlx", "version": mx.__version__, "supported_formats": ["safetensors"]}
