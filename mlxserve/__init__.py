"""mlxserve: a local OpenAI-compatible LLM server for MLX models."""

from mlxserve._blas import preload_openblas

__version__ = "0.1.0"

# Must run before anything imports mlx.core: MLX's CPU wheel otherwise uses a slow reference BLAS.
preload_openblas()
