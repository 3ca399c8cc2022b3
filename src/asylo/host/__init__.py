"""The untrusted side: load enclaves, call them, serve their host calls."""
