"""GET /v1/models: the loaded models, as OpenAI (and LM Studio) list them."""

from __future__ import annotations

from quart import Blueprint, jsonify

from mlxserve.api.http.parsing import answers
from mlxserve.api.openai.objects import ModelCard, ModelList
from mlxserve.api.state import server_state

blueprint = Blueprint("openai_models", __name__)


@blueprint.get("/v1/models")
@answers(ModelList)
async def list_models():
    """The loaded models."""
    data = [
        ModelCard(
            id=m.identifier,
            object="model",
            created=int(m.loaded_at),
            owned_by=m.record.id.split("/")[0],
            type=m.record.type,
        )
        for m in server_state().registry.loaded.values()
    ]
    return jsonify(ModelList(object="list", data=data).as_dict())
