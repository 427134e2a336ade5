"""OpenAI's API: /v1/chat/completions (chat.py), /v1/completions (completions.py), /v1/models
(models.py) and /v1/embeddings (embeddings.py); the request models (protocol.py), the answer
objects (objects.py) and their rendering from the pipeline's output events (formatting.py)."""
