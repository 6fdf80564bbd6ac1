"""State maps that share structure: the state after each event of a room, without a full
copy per event.

A :class:`StateNode` is a delta (``(type, state_key) -> event ID``, or ``None`` for a
removed key) over a parent node, or a full snapshot (no parent). An event that changes no
state shares its parent's node outright; a state event adds a one-entry delta. A chain of
deltas is folded into a new snapshot once it holds more entries than
``max(MIN_DELTAS_BEFORE_SNAPSHOT, size / SNAPSHOT_SIZE_DIVISOR)``: snapshots then cost at
most a constant number of entries per state change (amortised), and materialising any
node walks a chain no longer than a constant fraction of the state's size, i.e. no more
than the copy it produces. Nothing recurses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

StateKey = tuple[str, str]
StateMap = Mapping[StateKey, str]

#: A delta chain is always allowed this many entries before it is folded into a snapshot.
MIN_DELTAS_BEFORE_SNAPSHOT: Final = 64
#: ...and beyond that, up to the snapshot's size divided by this.
SNAPSHOT_SIZE_DIVISOR: Final = 4


class StateNode:
    """One immutable state map, as a delta over ``parent`` or a snapshot."""

    __slots__ = ("chain_entries", "delta", "parent", "size")

    def __init__(
        self,
        parent: StateNode | None,
        delta: Mapping[StateKey, str | None],
        chain_entries: int,
        size: int,
    ) -> None:
        self.parent = parent
        self.delta = delta
        # Delta entries between this node and its snapshot (0 for a snapshot).
        self.chain_entries = chain_entries
        # Number of keys in the materialised map.
        self.size = size

    @classmethod
    def snapshot(cls, state: StateMap) -> StateNode:
        """A node holding a copy of ``state``."""
        full = dict(state)
        return cls(None, full, 0, len(full))

    def materialise(self) -> dict[StateKey, str]:
        """The full state map this node stands for (a fresh dict the caller may keep)."""
        chain: list[Mapping[StateKey, str | None]] = []
        node: StateNode | None = self
        while node is not None and node.parent is not None:
            chain.append(node.delta)
            node = node.parent
        result: dict[StateKey, str] = {}
        if node is not None:
            result.update((k, v) for k, v in node.delta.items() if v is not None)
        for delta in reversed(chain):
            for key, value in delta.items():
                if value is None:
                    result.pop(key, None)
                else:
                    result[key] = value
        return result

    def get(self, key: StateKey) -> str | None:
        """The event ID at ``key``, or None; walks at most the delta chain."""
        node: StateNode | None = self
        while node is not None:
            if key in node.delta:
                return node.delta[key]
            node = node.parent
        return None

    def with_changes(self, changes: Mapping[StateKey, str | None]) -> StateNode:
        """A node for this state with ``changes`` applied (``None`` removes a key); this
        node itself when ``changes`` change nothing."""
        effective = {k: v for k, v in changes.items() if self.get(k) != v}
        if not effective:
            return self
        chain = self.chain_entries + len(effective)
        size = self.size + sum(
            (v is not None) - (self.get(k) is not None) for k, v in effective.items()
        )
        if chain > max(MIN_DELTAS_BEFORE_SNAPSHOT, size // SNAPSHOT_SIZE_DIVISOR):
            full = self.materialise()
            for key, value in effective.items():
                if value is None:
                    full.pop(key, None)
                else:
                    full[key] = value
            return StateNode(None, full, 0, len(full))
        return StateNode(self, effective, chain, size)

    def diff_to(self, state: StateMap) -> dict[StateKey, str | None]:
        """The changes that turn this node's map into ``state``."""
        mine = self.materialise()
        changes: dict[StateKey, str | None] = {k: v for k, v in state.items() if mine.get(k) != v}
        changes.update((k, None) for k in mine if k not in state)
        return changes


EMPTY_STATE = StateNode(None, {}, 0, 0)
