"""Rooms (spec: Server-Server API, "PDUs", "Room versions"): versions, events, auth, state."""
