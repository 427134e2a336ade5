"""OpenAI's Responses API, POST /v1/responses (route.py): the request (protocol.py), input and
output items (items.py), tools (tools.py) and custom tools (custom.py), and remote MCP tools
run within the request (mcp.py) with their output items streamed (mcp_stream.py)."""
