"""One model split across the processes of an `mlx.launch` group (`mlxserve serve --distributed`):
rank 0 serves and says each step to the other ranks, which follow it in lock-step."""
