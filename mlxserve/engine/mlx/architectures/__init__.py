"""The model code the MLX runner drives: mlx-lm's language models, mlx-vlm's vision-language
models, and the BERT encoder of embedding models."""
