"""Cross-encoder rerankers on MLX: a BERT or XLM-RoBERTa classifier reads the query and each
document together and gives one relevance logit, P(relevant) by its sigmoid (as
sentence-transformers' CrossEncoder scores a one-label model). On the embedding engine's own
thread, batched by length."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlxserve.engine.base import PairScores
from mlxserve.engine.mlx.architectures.bert import BertConfig, cross_encoder_class
from mlxserve.engine.mlx.embedding import BATCH_SIZE, MLXEmbeddingModel


class MLXCrossEncoder(MLXEmbeddingModel):
    @staticmethod
    def _load_model(path: Path) -> nn.Module:
        config = json.loads((path / "config.json").read_text())
        architecture = cross_encoder_class(config)
        model = architecture(BertConfig.from_dict(config))
        weights = architecture.sanitize(mx.load(str(path / "model.safetensors")))
        model.load_weights(list(weights.items()))
        mx.eval(model.parameters())
        return model

    async def score_pairs(self, query: str, documents: list[str]) -> PairScores:
        """Each document read after the query, in the model's window (the longer of the two
        cut first when the pair does not fit)."""
        encodings = self.tokenizer.encode_batch([(query, document) for document in documents])
        truncated = [index for index, e in enumerate(encodings) if e.overflowing]
        rows = [(e.ids, e.type_ids) for e in encodings]
        loop = asyncio.get_running_loop()
        scores = await loop.run_in_executor(self._executor, self._score_all, rows)
        return PairScores(scores, sum(len(ids) for ids, _ in rows), truncated)

    def _score_all(self, rows: list[tuple[list[int], list[int]]]) -> np.ndarray:
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
        logits = np.zeros(len(rows), dtype=np.float32)
        for start in range(0, len(order), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]  # similar lengths together: little padding
            width = max(len(rows[i][0]) for i in batch)
            ids, types, mask = (np.zeros((len(batch), width), dtype=np.int32) for _ in range(3))
            for r, i in enumerate(batch):
                length = len(rows[i][0])
                ids[r, :length], types[r, :length], mask[r, :length] = *rows[i], 1
            out = self._model(mx.array(ids), mx.array(mask), mx.array(types))
            logits[batch] = np.array(out.astype(mx.float32))
        return 1.0 / (1.0 + np.exp(-logits))
