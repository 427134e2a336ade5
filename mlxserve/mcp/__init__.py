"""MCP (Model Context Protocol) tools within a request: the servers requests may use and their
connections (pool.py, servers.py), the tools one request offers the model (tools.py), and the
tool loop that calls them between rounds of generation (loop.py)."""
