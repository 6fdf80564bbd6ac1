"""server_keys."""
