"""llama-server's own routes that editors call: /infill, fill-in-the-middle for autocompletion."""
