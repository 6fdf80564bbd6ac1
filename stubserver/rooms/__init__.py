"""Rooms (spec: Server-Server API, "PDUs", "Room versions"): versions, events, auth, state.

Where a change goes, from the bottom up:

- the rules, pure: ``versions``, ``event`` (a PDU with what is derived from it once),
  ``format`` (the event format), ``redaction``, ``hashes``, ``signing``, ``auth_events``,
  ``auth_rules``, ``power_levels``, ``third_party_invite``, ``state_res``,
  ``state_store``, ``forward_extremities``;
- one room: ``room`` (the graph and the checks; memberships kept as state moves) and
  ``room_queries`` (its answers to other servers), ``store`` (the rooms held);
- building our events: ``builder``, ``create``, ``membership``, ``tamper``;
- receiving: ``transaction`` (a ``/send`` body, pure), ``pdu_keys`` (the keys PDUs need),
  ``intake`` (the one receive pipeline: parse, keys, verify, hash, add);
- the federation endpoints: ``routes`` (the table) over ``routes_membership``,
  ``routes_send``, ``routes_read`` and ``routes_common``; they tell ``hooks``;
- the service (the control API's port ``port``, its errors ``errors`` and their HTTP
  answers ``http_errors``): ``service`` (commands), ``outgoing`` and ``sender`` (our
  events out), ``remote`` and ``remote_membership`` (asking other servers),
  ``followup`` (after a transaction or invite), ``views`` and ``long_poll`` (reads and
  long-polls), ``identifiers``.
"""
