"""Facts about Hugging Face checkpoints that the converter, model discovery and the MLX engine
share (a leaf module: it imports nothing of mlxserve's, so any layer may read it)."""

# `model_type` values of vision checkpoints that mlxserve converts and serves with images.
VISION_MODEL_TYPES = ("gemma3", "qwen2_vl", "qwen2_5_vl", "qwen3_vl")
# A checkpoint's `torch_dtype` as the store labels an unquantized model.
DTYPE_LABELS = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}
