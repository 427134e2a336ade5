"""One process's serving on the MLX engine: the runner thread that owns a model's state, the
sequences it decodes in a batch, and what they use (grammars, drafts, the disk prompt cache)."""
