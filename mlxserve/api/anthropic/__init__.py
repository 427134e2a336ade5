"""Anthropic's Messages API, /v1/messages and count_tokens (messages.py): the request models
(protocol.py), the messages as the pipeline's turns (conversation.py), context editing
(context.py) and the output events rendered as Anthropic's stream events (stream.py)."""
