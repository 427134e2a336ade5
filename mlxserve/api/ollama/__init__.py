"""Ollama's native API (/api/chat, /api/generate, /api/embed, /api/tags, /api/show, /api/ps,
/api/pull, ...): its requests parsed into the pipeline's neutral ones, its answers and
newline-delimited JSON streams rendered from the pipeline's events and the model registry."""
