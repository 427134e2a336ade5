"""Connections a request makes the server open (MCP servers, remote images): to the hosts it
may reach only."""
