"""Which draft model a request decodes with, checked before its response starts.

On the MLX engine, a request's `draft_model` (else the server's `--draft-model`) is an MLX
language model of the same vocabulary that the operator offers (`--draft-model`,
`--draft-models`): a request must not make the server load any model of the store. One named
by the request that does not fit is refused; the server's default is then left out. A draft's
weights are checked against free memory and counted with its target's before it first loads.
llama.cpp sets its draft model per server child, when the model loads, so there a request may
only name the one loaded with it.
"""

from __future__ import annotations

from dataclasses import replace

from mlxserve.engine.base import Speculation
from mlxserve.models.loaded import LoadedModel, RegistryError
from mlxserve.models.registry import ModelRegistry
from mlxserve.models.store import ModelRecord
from mlxserve.pipeline.errors import RequestError


async def resolve_speculation(
    registry: ModelRegistry, loaded: LoadedModel, asked: Speculation
) -> Speculation:
    engine = loaded.engine
    if engine.engine_name != "mlx":
        if asked.draft_model not in (None, engine.draft_model):
            loaded_with = f"'{engine.draft_model}'" if engine.draft_model else "none"
            raise RequestError(
                400,
                f"on the llama.cpp engine the draft model is the one '{loaded.identifier}' was "
                f"loaded with ({loaded_with}; serve --draft-model sets it), not "
                f"'{asked.draft_model}'",
                "draft_model",
                "draft_model_not_loaded",
            )
        return asked  # llama.cpp drafts as its child was started, and reports it
    name = asked.draft_model or registry.options.draft_model
    if name is None:
        return asked
    offered = {registry.options.draft_model, *registry.options.draft_models} - {None}
    if name not in offered:
        listed = ", ".join(sorted(offered)) or "none"
        raise RequestError(
            400,
            f"draft_model '{name}' is not one this server offers (serve --draft-model and "
            f"--draft-models name them: {listed})",
            "draft_model",
            "draft_model_not_offered",
        )
    try:
        draft = await _mlx_draft(registry, loaded, name)
        await registry.admit_draft(loaded, draft)
        return replace(asked, draft_model=name, draft_path=str(draft.directory))
    except (RequestError, RegistryError):
        if asked.draft_model is None:
            return asked  # the server's default does not fit this model or memory: no drafts
        raise


async def _mlx_draft(registry: ModelRegistry, loaded: LoadedModel, name: str) -> ModelRecord:
    record = await registry.find(name)
    if record is None or record.format != "mlx" or record.type == "embeddings":
        raise RequestError(
            404 if record is None else 400,
            f"draft_model '{name}' is not an MLX language model on this server",
            "draft_model",
            "draft_model_not_found" if record is None else "invalid_draft_model",
        )
    if record.vocab_size != loaded.engine.vocab_size:
        raise RequestError(
            400,
            f"draft_model '{record.id}' has a vocabulary of {record.vocab_size} tokens and "
            f"'{loaded.identifier}' one of {loaded.engine.vocab_size}: they must be the same",
            "draft_model",
            "invalid_draft_model",
        )
    return record
