"""MCP (Model Context Protocol) tools within a request: the servers a request asks for
(specs.py), which of them it may use and their connections (pool.py, servers.py), where servers
named in requests may be (hosts.py, transport.py), the tools one request offers the model
(tools.py), and the tool loop that calls them between rounds of generation (loop.py)."""
