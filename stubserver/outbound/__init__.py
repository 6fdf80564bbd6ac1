"""outbound: the federation client stack (agent, signed requests, and the factory that wires
discovery, TLS and the key fetcher into it)."""
