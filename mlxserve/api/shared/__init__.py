"""What more than one API family uses, so that no family imports another: the request pieces
every family's protocol builds on (protocol.py), the conversation store behind
`previous_response_id` (/v1/responses and /api/v1/chat) and the item stream that Anthropic's,
the Responses API's and /api/v1's renderers build on."""
