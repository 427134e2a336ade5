"""What every API family's routes share over HTTP: the guard (origins and the API key), error
bodies and handlers, request body parsing and answer schemas (`answers`), server-sent events,
the OpenAPI document, and /metrics."""
