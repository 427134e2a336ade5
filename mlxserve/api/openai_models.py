"""GET /v1/models: the loaded models, as OpenAI (and LM Studio) list them."""

from __future__ import annotations

from quart import Blueprint, current_app, jsonify

blueprint = Blueprint("openai_models", __name__)


@blueprint.get("/v1/models")
async def list_models():
    data = [
        {
            "id": m.identifier,
            "object": "model",
            "created": int(m.loaded_at),
            "owned_by": m.record.id.split("/")[0],
            "type": m.record.type,  # llm | vlm | embeddings, as LM Studio's /api/v0 says
        }
        for m in current_app.registry.loaded.values()
    ]
    return jsonify({"object": "list", "data": data})
