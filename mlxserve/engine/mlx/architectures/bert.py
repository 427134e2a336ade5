"""A BERT encoder in MLX: with sentence-transformers' mean pooling for embedding models, and with
a classifier head for cross-encoder rerankers (BERT's, and XLM-RoBERTa's such as the BGE
rerankers).

Weight names follow Hugging Face's BertModel, BertForSequenceClassification and
XLMRobertaForSequenceClassification, so their checkpoints load as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

ROBERTA_TYPES = ("roberta", "xlm-roberta")


@dataclass
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    # RoBERTa numbers positions after its padding id: the first token is at pad_token_id + 1.
    position_offset: int = 0

    @classmethod
    def from_dict(cls, config: dict) -> BertConfig:
        fields = {k: config[k] for k in cls.__dataclass_fields__ if k in config}
        if config.get("model_type") in ROBERTA_TYPES:
            fields["position_offset"] = int(config.get("pad_token_id", 1)) + 1
        return cls(**fields)


class Embeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.position_offset = config.position_offset
        # RoBERTa has one segment: a tokenizer that numbers the document's tokens 1 must not
        # index past its table.
        self.segments = config.type_vocab_size

    def __call__(self, input_ids: mx.array, token_types: mx.array | None = None) -> mx.array:
        """`token_types`: which segment each token is in (a cross-encoder's query 0, document
        1); one segment when None. Rows are padded on the right, so a row's tokens are numbered
        from its start."""
        positions = mx.arange(input_ids.shape[1])[None] + self.position_offset
        one = token_types is None or self.segments == 1
        types = mx.zeros_like(input_ids) if one else token_types
        summed = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(types)
        )
        return self.LayerNorm(summed)


class SelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        batch, length, width = x.shape

        def split(t):
            return t.reshape(batch, length, self.heads, -1).transpose(0, 2, 1, 3)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scale = (width // self.heads) ** -0.5
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
        return out.transpose(0, 2, 1, 3).reshape(batch, length, width)


class DenseNorm(nn.Module):
    """BERT's residual output block: dense, then LayerNorm of the sum with the block's input."""

    def __init__(self, in_size: int, out_size: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(in_size, out_size)
        self.LayerNorm = nn.LayerNorm(out_size, eps=eps)

    def __call__(self, x: mx.array, residual: mx.array) -> mx.array:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = DenseNorm(config.hidden_size, config.hidden_size, config.layer_norm_eps)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def __call__(self, x: mx.array) -> mx.array:
        return nn.gelu(self.dense(x))  # the exact erf GELU that BERT was trained with


class Layer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = DenseNorm(config.intermediate_size, config.hidden_size, config.layer_norm_eps)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        attended = self.attention(x, mask)
        return self.output(self.intermediate(attended), attended)


class Encoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = [Layer(config) for _ in range(config.num_hidden_layers)]


class BertModel(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    def __call__(self, input_ids: mx.array, attention_mask: mx.array) -> mx.array:
        """Unit-length mean-pooled sentence vectors for a padded batch."""
        hidden = self.encode(input_ids, attention_mask)
        weights = attention_mask[..., None].astype(hidden.dtype)
        pooled = (hidden * weights).sum(axis=1) / mx.maximum(weights.sum(axis=1), 1e-9)
        return pooled / mx.maximum(mx.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)

    def encode(
        self, input_ids: mx.array, attention_mask: mx.array, token_types: mx.array | None = None
    ) -> mx.array:
        """Every position's last hidden state for a padded batch."""
        # Padding positions get -inf-like scores so attention never looks at them.
        additive = (1.0 - attention_mask[:, None, None, :].astype(mx.float32)) * -1e9
        hidden = self.embeddings(input_ids, token_types)
        for layer in self.encoder.layer:
            hidden = layer(hidden, additive)
        return hidden

    @staticmethod
    def sanitize(weights: dict) -> dict:
        """Keep the encoder's weights; drop the pooler and buffers sentence vectors never use."""
        return {
            name: value
            for name, value in weights.items()
            if name.startswith(("embeddings.", "encoder.")) and not name.endswith("position_ids")
        }


class Pooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def __call__(self, first: mx.array) -> mx.array:
        return mx.tanh(self.dense(first))


class BertCrossEncoder(nn.Module):
    """A BERT sequence classifier read as a reranker (Hugging Face's
    BertForSequenceClassification, as the ms-marco cross-encoders are): the query and a
    document read together, one relevance logit from the first token's pooled state."""

    def __init__(self, config: BertConfig, labels: int = 1):
        super().__init__()
        self.bert = BertModel(config)
        self.bert.pooler = Pooler(config)
        self.classifier = nn.Linear(config.hidden_size, labels)

    def __call__(self, input_ids: mx.array, mask: mx.array, token_types: mx.array) -> mx.array:
        """The relevance logit of each padded (query, document) row."""
        hidden = self.bert.encode(input_ids, mask, token_types)
        return self.classifier(self.bert.pooler(hidden[:, 0]))[:, 0]

    @staticmethod
    def sanitize(weights: dict) -> dict:
        return {name: value for name, value in weights.items() if not name.endswith("position_ids")}


class ClassificationHead(nn.Module):
    """RoBERTa's: a dense layer and tanh on the first token, then the labels' projection."""

    def __init__(self, config: BertConfig, labels: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, labels)

    def __call__(self, first: mx.array) -> mx.array:
        return self.out_proj(mx.tanh(self.dense(first)))


class RobertaCrossEncoder(nn.Module):
    """An (XLM-)RoBERTa sequence classifier read as a reranker (Hugging Face's
    XLMRobertaForSequenceClassification, as BAAI's bge-reranker models are): one relevance logit
    of the first token, `<s>`, after `<s> query </s></s> document </s>`."""

    def __init__(self, config: BertConfig, labels: int = 1):
        super().__init__()
        self.roberta = BertModel(config)
        self.classifier = ClassificationHead(config, labels)

    def __call__(self, input_ids: mx.array, mask: mx.array, token_types: mx.array) -> mx.array:
        hidden = self.roberta.encode(input_ids, mask, token_types)
        return self.classifier(hidden[:, 0])[:, 0]

    sanitize = BertCrossEncoder.sanitize


def cross_encoder_class(config: dict) -> type[BertCrossEncoder] | type[RobertaCrossEncoder]:
    return RobertaCrossEncoder if config.get("model_type") in ROBERTA_TYPES else BertCrossEncoder
