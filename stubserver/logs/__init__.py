"""What stubserver writes to its log, and what it keeps out of it (issue 24).

- :mod:`stubserver.logs.quiet`: Twisted's connection machinery made without its start/stop
  lines (an HTTP connection pool, the reactor of a twisted.names resolver).
- :mod:`stubserver.logs.legacy`: a debug-level context for the lines Twisted writes
  unconditionally (its ports' binds and closes).
- :mod:`stubserver.logs.output`: the observer ``main`` starts once, at a level
  (``log_level`` in the config, ``--verbose``).
"""
