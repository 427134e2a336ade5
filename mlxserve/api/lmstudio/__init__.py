"""LM Studio's native REST APIs. /api/v0 (v0.py): OpenAI's chat and text completions plus
stats, with model entries and their load state (v0_format.py). /api/v1 (v1.py): models with
their capabilities (v1_models.py), load and unload, downloads (v1_downloads.py), and /chat with
MCP integrations (v1_tools.py) answered as LM Studio's items and named events (v1_reply.py)."""
