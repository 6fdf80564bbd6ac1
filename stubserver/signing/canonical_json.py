"""Canonical JSON (spec appendix "Canonical JSON") and strict JSON parsing of untrusted bodies.

Canonical form: keys sorted by code point, no insignificant whitespace, UTF-8 with
characters left unescaped, integers only (in ``[-(2**53)+1, 2**53-1]``), no floats.

Encoding is matrix-org's ``canonicaljson`` (what Synapse signs with, issue 11), behind
:func:`encode_canonical_json`, which first refuses what canonical JSON has no form for
(floats, integers out of range: the library would encode them).

:func:`parse_json_bytes` is the gate for bytes from the network: whatever it accepts, the
libraries encode without raising (no NaN/Infinity or overflowing floats such as ``1e400``,
no lone surrogate escapes such as ``"\\ud800"``, which canonicaljson cannot encode as
UTF-8), so that a later encode (signature check, request log, countersigning) cannot
fail on network input.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar, cast

import canonicaljson

_T = TypeVar("_T")

#: Largest magnitude of an integer a canonical JSON value may carry.
MAX_SAFE_INTEGER = 2**53 - 1
#: Deepest nesting of arrays and objects accepted from the network.
MAX_JSON_DEPTH = 100

JsonDict = dict[str, Any]


class CanonicalJsonError(ValueError):
    """A value cannot be encoded as canonical JSON."""


class BadJson(ValueError):
    """Bytes from the network are not acceptable JSON; ``not_json`` tells the two kinds apart.

    ``not_json`` is True when the bytes are not JSON at all (``M_NOT_JSON``) and False when
    they are JSON that we refuse (``M_BAD_JSON``: NaN, huge integers, duplicate keys, too deep).
    """

    def __init__(self, message: str, *, not_json: bool) -> None:
        super().__init__(message)
        self.not_json = not_json


_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True
)


def _check_canonical(value: object, depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise CanonicalJsonError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalJsonError(f"integer {value} is outside the canonical JSON range")
        return
    if isinstance(value, float):
        raise CanonicalJsonError("floats have no canonical JSON form")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CanonicalJsonError(f"object key {k!r} is not a string")
            _check_canonical(v, depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_canonical(v, depth + 1)
        return
    raise CanonicalJsonError(f"{type(value).__name__} is not a JSON type")


def check_canonical(value: object) -> None:
    """Raise :class:`CanonicalJsonError` unless ``value`` has a canonical JSON form (no
    encoding: for callers that hand ``value`` to a library encoder next)."""
    _check_canonical(value)
    stack = [value]
    while stack:  # strings: lone surrogates have no UTF-8 form
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise CanonicalJsonError("a string holds a lone surrogate") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


#: The C encoder ``json`` builds for each ``JSONEncoder.encode`` call, with
#: ``canonicaljson``'s settings (no ASCII escaping, no NaN, compact, sorted keys, its
#: ``default``); None where ``json`` has no C speedups.
_c_make_encoder: Any = getattr(json.encoder, "c_make_encoder", None)


def _encode_canonical(value: object) -> bytes:
    """``canonicaljson.encode_canonical_json(value)``, the same bytes and errors, with the
    C encoder made here: the library's way there (``JSONEncoder.encode``, ``iterencode``,
    a closure per call) cost ~1-3 us a call, and a received PDU is encoded three times
    (issue 22). A fresh encoder per call: its circular-reference markers are left dirty
    by a failed encoding."""
    if _c_make_encoder is None:  # pragma: no cover - CPython has the speedups
        return canonicaljson.encode_canonical_json(value)
    encode = _c_make_encoder(
        {},
        canonicaljson._preprocess_for_serialisation,
        json.encoder.encode_basestring,
        None,
        ":",
        ",",
        True,
        False,
        False,
    )
    return "".join(encode(value, 0)).encode("utf-8")


def encode_canonical_json(value: object, *, checked: bool = False) -> bytes:
    """Encode ``value`` as canonical JSON bytes, or raise :class:`CanonicalJsonError`.

    A thin entry point over ``canonicaljson.encode_canonical_json``: our range checks
    first (the library would encode floats and any integer), then the library. With
    ``checked`` the caller has made those checks already (a PDU past the room format
    checks, which walk it once): the library alone.
    """
    if not checked:
        _check_canonical(value)
    try:
        return _encode_canonical(value)
    except UnicodeEncodeError:
        raise CanonicalJsonError("a string holds a lone surrogate") from None


#: A JSON string in encoded JSON (UTF-8 never puts a quote or backslash byte inside a
#: multi-byte character; unrolled, ``[^"\\]*`` runs between escapes, so the match is
#: linear and fast), and what is left of a float once strings, ``true`` and ``false`` are
#: gone (``null``, integers and punctuation have none of these).
_JSON_STRING_RE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_FLOAT_MARK_RE = re.compile(rb"[.eE]")


def holds_float(encoded: bytes) -> bool:
    """True when the encoded JSON ``encoded`` holds a float (outside its strings)."""
    if b"\\" in encoded:
        bare = _JSON_STRING_RE.sub(b'""', encoded)
    else:
        # No escape, so every quote byte opens or closes a string: the strings are the
        # odd pieces between quotes (issue 22: ~4x faster than the match above, which
        # cost ~5 us per PDU of a /send's X-Matrix check).
        bare = b"".join(encoded.split(b'"')[0::2])
    return _FLOAT_MARK_RE.search(bare.replace(b"true", b"").replace(b"false", b"")) is not None


def encode_parsed_canonical_json(value: object) -> bytes:
    """:func:`encode_canonical_json` for a value made of what :func:`parse_json_bytes`
    returns (and strings): the parser has refused integers out of range, nesting past
    :data:`MAX_JSON_DEPTH`, non-string keys and lone surrogates, so only floats are left
    to refuse, found on the encoded bytes instead of by a walk in Python (issue 22: the
    walk of a /send body cost ~20 us per PDU under the profiler)."""
    encoded = encode_canonical_json(value, checked=True)
    if holds_float(encoded):
        raise CanonicalJsonError("floats have no canonical JSON form")
    return encoded


def encode_json(value: object) -> bytes:
    """Encode ``value`` compactly as UTF-8 JSON (for responses; not necessarily canonical)."""
    return _encoder.encode(value).encode("utf-8")


def _reject_constant(name: str) -> object:
    raise BadJson(f"{name} is not valid JSON", not_json=False)


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for k, v in pairs:
        if k in result:
            raise BadJson(f"duplicate key {k!r} in a JSON object", not_json=False)
        result[k] = v
    return result


def _parse_int(text: str) -> int:
    # Bound the digits before int() so a megabyte of digits cannot burn CPU.
    if len(text.lstrip("-")) > 16:
        raise BadJson("integer outside the range -(2**53-1)..2**53-1", not_json=False)
    value = int(text)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise BadJson("integer outside the range -(2**53-1)..2**53-1", not_json=False)
    return value


def _parse_float(text: str) -> float:
    # Finite floats pass (canonicaljson encodes them; signing refuses them later, cleanly);
    # 1e400 overflows to infinity, which no JSON encoder can write back.
    value = float(text)
    if not math.isfinite(value):
        raise BadJson(f"number {text[:32]} is out of range", not_json=False)
    return value


#: A ``\\u`` escape of a UTF-16 surrogate (D800-DFFF); only these can make a lone one.
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: object) -> bool:
    """True when a string (key or value) in ``value`` cannot be encoded as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


#: A JSON string as :func:`_depth_exceeds` skips it: from a quote to the next unescaped
#: quote, or to the end of the text when none closes it (DOTALL: an escape may precede
#: any character). Unrolled (``[^"\\]*`` runs between escapes): linear.
_STRING_OR_REST_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_BRACKET_RE = re.compile(r"[\[\]{}]")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
#: For the rounds of pair removal: objects as arrays (only the nesting matters), and
#: every byte but a bracket dropped (one ``bytes.translate``, in C).
_AS_ARRAY = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))


def _depth_exceeds(text: str, limit: int) -> bool:
    """True when brackets nest deeper than ``limit`` (strings skipped); linear, no recursion.

    All in C (the Python loop over every character it replaces cost ~2 ms per
    /send of 50 PDUs, issue 22): the strings are cut out (with no backslash in the text,
    every other piece between quotes is a string, an unterminated last one included).
    Then the brackets left, objects as arrays, lose their innermost ``[]`` pairs round by
    round: a well nested text is gone after as many rounds as it is deep (a few for any
    real body; the sum over all brackets it replaces cost 200 ms for a body of a million
    ``{}``, issue 22's stall). A text not gone within ``limit`` rounds (too deep, or not
    well nested: refused either way) is measured exactly by the running sum."""
    return _nested_deeper(_outside_strings(text), limit)


def _outside_strings(text: str) -> str:
    """``text`` (JSON) without its strings: from a quote to the next unescaped quote, or
    to the end of the text when none closes it. With no backslash in the text, every
    other piece between quotes is a string, an unterminated last one included."""
    if "\\" in text:
        return _STRING_OR_REST_RE.sub("", text)
    return "".join(text.split('"')[0::2])


def _nested_deeper(outside: str, limit: int) -> bool:
    """:func:`_depth_exceeds` over the text without its strings (:func:`_outside_strings`)."""
    return _run_steps(_nesting_steps(outside, limit))


#: Steps of a check done in one go (:func:`_run_steps`) or with a pause between them
#: (:func:`_run_steps_in_slices`): the generator yields between steps and returns the
#: answer.
Steps = Generator[None, None, _T]
#: Brackets the running sum of :func:`_nesting_steps` adds up per step.
_BRACKETS_PER_STEP = 64 * 1024
_DEPTH_STEP = {ord("["): 1, ord("]"): -1}


def _advance(steps: Steps[_T]) -> list[_T]:
    """Run the next step of ``steps``: ``[]`` while more follow, ``[answer]`` at the end."""
    try:
        next(steps)
    except StopIteration as done:
        return [done.value]
    return []


def _run_steps(steps: Steps[_T]) -> _T:
    """What ``steps`` answer, run in one go."""
    while not (answer := _advance(steps)):
        pass
    return answer[0]


async def _run_steps_in_slices(steps: Steps[_T], pause: Pause) -> _T:
    """What ``steps`` answer, awaiting ``pause()`` between steps."""
    while not (answer := _advance(steps)):
        await pause()
    return answer[0]


def _nesting_steps(outside: str, limit: int) -> Steps[bool]:
    """:func:`_nested_deeper` in steps of a few milliseconds at most for a body of
    megabytes: the translation, each round of pair removal, and the running sum in
    pieces of :data:`_BRACKETS_PER_STEP` (issue 22: the check held the reactor ~25 ms for
    a body of a million ``{}``, and the running sum ~200 ms)."""
    if outside.count("[") + outside.count("{") <= limit:
        return False
    original = outside.encode("utf-8").translate(_AS_ARRAY, _NOT_BRACKET)
    brackets = original
    for _ in range(limit):
        yield
        shorter = brackets.replace(b"[]", b"")
        if not shorter:
            return False
        if len(shorter) == len(brackets):
            break
        brackets = shorter
    depth = deepest = 0
    for start in range(0, len(original), _BRACKETS_PER_STEP):
        yield
        piece = original[start : start + _BRACKETS_PER_STEP]
        sums = list(itertools.accumulate(map(_DEPTH_STEP.__getitem__, piece), initial=depth))
        sums.append(deepest)
        deepest, depth = max(sums), sums[-2]
    return deepest > limit


#: Duplicate keys are refused by a Python call per object (the hook) when the body has
#: fewer objects than one per this many bytes (an ordinary /send: ~300 in 30 KB); denser
#: bodies (a million ``{}`` in 4 MB, issue 22) are dumped again in C and their pairs
#: counted, which costs ~5 ns a byte where the hook costs ~400 ns an object.
_BYTES_PER_OBJECT_FOR_THE_HOOK = 80
_dump_for_count = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=False
).encode


def _loads(text: str, *, duplicates_hook: bool) -> Any:
    """``json.loads`` with the strict hooks; with ``duplicates_hook`` a Python call per
    object that refuses duplicate keys (issue 22: half of the parse of a body of a million
    small objects, where counting pairs is cheaper)."""
    try:
        return json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
            object_pairs_hook=_pairs_no_duplicates if duplicates_hook else None,
        )
    except BadJson:
        raise
    except (ValueError, RecursionError) as e:
        raise BadJson(f"body is not JSON: {e}", not_json=True) from None


def parse_json_bytes(body: bytes) -> Any:
    """Parse untrusted JSON bytes strictly.

    Rejects invalid UTF-8 and non-JSON (``not_json=True``), and NaN/Infinity, integers
    outside the canonical range, floats that overflow (``1e400``), duplicate keys, nesting
    past :data:`MAX_JSON_DEPTH` and lone surrogate escapes (``"\\ud800"``, a valid JSON
    escape that no UTF-8 encoder can write back) (``not_json=False``). Never raises
    RecursionError.
    """
    text, outside = _checked_text(body)
    if outside.count("{") * _BYTES_PER_OBJECT_FOR_THE_HOOK <= len(text):
        value = _loads(text, duplicates_hook=True)
    else:
        value = _loads(text, duplicates_hook=False)
        if _outside_strings(_dump_for_count(value)).count(":") != outside.count(":"):
            # A key was given twice (the parser kept the last): parse again, refusing it
            # by name. Each ":" outside strings is one key-value pair, in the body as in a
            # dump of what was parsed, so the counts differ exactly when one was dropped.
            _loads(text, duplicates_hook=True)
    return _without_lone_surrogates(text, value)


def _checked_text(body: bytes) -> tuple[str, str]:
    """The body as text, and the text without its strings, once it is UTF-8 nested at
    most :data:`MAX_JSON_DEPTH` deep; raise :class:`BadJson`."""
    return _run_steps(_checked_text_steps(body))


def _checked_text_steps(body: bytes) -> Steps[tuple[str, str]]:
    """:func:`_checked_text` in steps: the decode, the strings cut out, then the nesting
    check's (:func:`_nesting_steps`)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadJson(f"body is not valid UTF-8: {e.reason}", not_json=True) from None
    yield
    outside = _outside_strings(text)
    if (yield from _nesting_steps(outside, MAX_JSON_DEPTH)):
        raise BadJson(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", not_json=False)
    return text, outside


def _without_lone_surrogates(text: str, value: Any) -> Any:
    """``value`` (parsed from ``text``), unless a string of it holds a lone surrogate."""
    # Only a \\uD8xx-\\uDFxx escape can produce a surrogate (UTF-8 decoding refuses encoded
    # ones), so the walk runs only for bodies that have such an escape.
    if _SURROGATE_ESCAPE_RE.search(text) and _has_lone_surrogate(value):
        raise BadJson("a string holds a lone surrogate escape (not UTF-8)", not_json=False)
    return value


#: Await it to let other work run (``stubserver.slices.TimeSlices.pause``).
Pause = Callable[[], Awaitable[None]]
#: The strict parser, one value at a time (``scan(text, index) -> (value, end)``), and
#: its string scanner (``scanstring(text, after_quote) -> (string, end)``); neither is in
#: the ``json`` module's type stubs.
_strict_scan: Callable[[str, int], tuple[Any, int]] = cast(
    Any,
    json.JSONDecoder(
        parse_constant=_reject_constant,
        parse_int=_parse_int,
        parse_float=_parse_float,
        object_pairs_hook=_pairs_no_duplicates,
    ),
).scan_once
_scanstring: Callable[[str, int], tuple[str, int]] = cast(Any, json.decoder).scanstring
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _scan_value(text: str, at: int) -> tuple[Any, int]:
    try:
        return _strict_scan(text, at)
    except StopIteration:  # no value at ``at`` (a coroutine may not let it out)
        raise _NotSliced from None


def _skip_space(text: str, at: int) -> int:
    match = _WHITESPACE.match(text, at)
    assert match is not None  # the pattern matches the empty string
    return match.end()


class _NotSliced(Exception):
    """The text is not an object the sliced parse follows: parse it whole."""


async def parse_json_bytes_in_slices(body: bytes, pause: Pause) -> Any:
    """:func:`parse_json_bytes`, awaiting ``pause()`` after each element of the arrays
    directly under a top-level object (a ``/send``'s PDUs and EDUs): the same value and
    the same refusals, but a body of megabytes no longer holds the reactor for the whole
    parse (issue 22, /version stall). Whatever is not such an object, or is not JSON, is
    parsed whole (which refuses it with the usual words). The UTF-8 decode and the nesting
    check before the parse pause between their steps too (``_checked_text_steps``)."""
    text, _ = await _run_steps_in_slices(_checked_text_steps(body), pause)
    try:
        value = await _sliced_object(text, pause)
    except BadJson:
        raise
    except (_NotSliced, ValueError, IndexError, RecursionError):
        value = _loads(text, duplicates_hook=True)
    return _without_lone_surrogates(text, value)


async def _sliced_object(text: str, pause: Pause) -> dict[str, Any]:
    at = _skip_space(text, 0)
    if text[at : at + 1] != "{":
        raise _NotSliced
    at = _skip_space(text, at + 1)
    members: list[tuple[str, Any]] = []
    while text[at] != "}":
        if text[at] != '"':
            raise _NotSliced
        key, at = _scanstring(text, at + 1)
        at = _skip_space(text, at)
        if text[at] != ":":
            raise _NotSliced
        at = _skip_space(text, at + 1)
        if text[at] == "[":
            value, at = await _sliced_array(text, at + 1, pause)
        else:
            value, at = _scan_value(text, at)
        members.append((key, value))
        at = _skip_space(text, at)
        if text[at] == ",":
            at = _skip_space(text, at + 1)
            if text[at] == "}":
                raise _NotSliced  # a trailing comma
        elif text[at] != "}":
            raise _NotSliced
    if _skip_space(text, at + 1) != len(text):
        raise _NotSliced  # extra data after the object
    return _pairs_no_duplicates(members)


async def _sliced_array(text: str, at: int, pause: Pause) -> tuple[list[Any], int]:
    items: list[Any] = []
    at = _skip_space(text, at)
    if text[at] == "]":
        return items, at + 1
    while True:
        item, at = _scan_value(text, at)
        items.append(item)
        await pause()
        at = _skip_space(text, at)
        if text[at] == "]":
            return items, at + 1
        if text[at] != ",":
            raise _NotSliced
        at = _skip_space(text, at + 1)


async def encode_parsed_canonical_json_in_slices(
    value: object, pause: Pause, levels: int = 3
) -> bytes:
    """:func:`encode_parsed_canonical_json`, awaiting ``pause()`` after each element of
    the arrays within ``levels`` levels of objects (a request's signing object: its
    ``content``, a ``/send``'s PDUs): the same bytes (canonical JSON is the sorted members
    joined, each encoded alone) and the same refusals."""
    if levels <= 0 or not isinstance(value, (dict, list)):
        return encode_parsed_canonical_json(value)
    if isinstance(value, list):
        items = []
        for item in value:
            items.append(await encode_parsed_canonical_json_in_slices(item, pause, levels - 1))
            await pause()
        return b"[" + b",".join(items) + b"]"
    members = []
    for key in sorted(value):
        encoded = await encode_parsed_canonical_json_in_slices(value[key], pause, levels - 1)
        members.append(encode_canonical_json(key) + b":" + encoded)
    return b"{" + b",".join(members) + b"}"
