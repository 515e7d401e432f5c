"""A linearizability checker for histories of one-key operations (QUALITY R3).

A history is a list of `Operation`: who called what on which key, what it answered, and when the
call went out and the answer came back (`time.monotonic_ns()` around the request). The history
is linearizable when every operation can be given one instant between its call and its return
such that, taken in that order, the answers are those of a single register. Linearizability is
compositional (Herlihy & Wing), so each key is checked on its own.

The search is Wing & Gong's, with Lowe's improvements as Porcupine implements them: the calls
and returns are one time-ordered linked list; the search linearizes the first call it can (the
model accepts the operation's answer), lifts that call and its return out of the list, and
backtracks when it meets a return whose call it could not linearize; a cache of (set of
linearized operations, model state) pairs already explored cuts every repeated branch.

The model is a register with a version, for get, set, compare-and-set (set with `if_version`),
increment and delete. SPEC §1: a version is strictly larger after every write of the record and
never reused, but versions come from a counter shared by all keys, so the next one is not
predictable; the model knows a version only once an answer shows it (increment answers the new
value, not its version) and otherwise only a lower bound. That makes it slightly permissive about
version numbers (a write's version need only exceed the last one known), never wrongly strict.

An operation without an answer (the connection broke) may or may not have happened: it is given
a return at the end of time and may be linearized as having no effect.

States are sets of concrete register states (the answer to a lost operation is unknown, so one
step can lead to several); the search itself is deterministic over those sets.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Operation", "by_key", "check", "is_linearizable", "non_linearizable_keys"]

# The kinds of operation and their `arg` / `output`:
#   get        arg None            output None (absent) or (value, version)
#   set        arg value           output version
#   cas        arg (if_version, value)
#              output ("ok", version) | ("conflict", actual_version) | ("not_found", 0)
#   increment  arg amount          output the new value
#   delete     arg None            output True (it existed) or False
# `output` is anything for an operation whose `ret` is None (no answer came back).
KINDS = ("get", "set", "cas", "increment", "delete")


@dataclass(frozen=True)
class Operation:
    client: int
    key: str
    kind: str
    arg: Any
    output: Any
    call: float
    ret: float | None  # None: no answer; it may or may not have taken effect

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}")
        if self.ret is not None and self.ret < self.call:
            raise ValueError("an operation cannot return before it was called")


# --- the model: a register with a version ------------------------------------------------------

# A concrete state: (value, low, exact). `value` is None while the key is absent; the record's
# version is `exact` when an answer showed it, else some integer > `low`.
State = tuple[Any, int, int | None]
INITIAL: State = (None, 0, None)


def _version_may_be(state: State, version: int) -> bool:
    _, low, exact = state
    return exact == version if exact is not None else version > low


def _floor(state: State) -> int:
    """Every later write's version is above this."""
    _, low, exact = state
    return exact if exact is not None else low


def _step(state: State, op: Operation) -> Iterator[State]:
    """The states `op` can lead to from `state` given its answer (none: it cannot happen)."""
    value, _, _ = state
    if op.ret is None:
        yield state  # it may have had no effect
        yield from _lost(state, op)
        return
    if op.kind == "get":
        if op.output is None:
            if value is None:
                yield state
        elif value is not None and value == op.output[0] and _version_may_be(state, op.output[1]):
            yield (value, op.output[1], op.output[1])
    elif op.kind == "set":
        if op.output > _floor(state):
            yield (op.arg, op.output, op.output)
    elif op.kind == "cas":
        yield from _cas(state, op)
    elif op.kind == "increment":
        current = 0 if value is None else value
        if type(current) is int and current + op.arg == op.output:
            yield (op.output, _floor(state), None)
    elif op.kind == "delete":
        if op.output is (value is not None):
            yield (None, _floor(state), None)


def _cas(state: State, op: Operation) -> Iterator[State]:
    value, _, _ = state
    expected, new = op.arg
    outcome, version = op.output
    if outcome == "ok":
        holds = (
            value is None
            if expected == 0
            else value is not None and _version_may_be(state, expected)
        )
        if holds and version > max(expected, _floor(state)):
            yield (new, version, version)
    elif outcome == "conflict":
        if value is not None and version != expected and _version_may_be(state, version):
            yield (value, version, version)
    elif outcome == "not_found":
        if value is None and expected != 0:
            yield state


def _lost(state: State, op: Operation) -> Iterator[State]:
    """The effects of an operation whose answer never came (its version is unknown)."""
    value, low, exact = state
    floor = _floor(state)
    if op.kind == "set":
        yield (op.arg, floor, None)
    elif op.kind == "cas":
        expected, new = op.arg
        if expected == 0:
            holds = value is None
        else:
            holds = value is not None and (exact == expected or (exact is None and expected > low))
        if holds:
            yield (new, max(expected, floor), None)
    elif op.kind == "increment":
        current = 0 if value is None else value
        if type(current) is int:
            yield (current + op.arg, floor, None)
    elif op.kind == "delete":
        yield (None, floor, None)


def _apply(states: frozenset[State], op: Operation) -> frozenset[State]:
    return frozenset(after for state in states for after in _step(state, op))


# --- the search (Wing & Gong, with Lowe's lifting and cache) -----------------------------------


class _Entry:
    """A call or a return in the time-ordered, doubly linked history."""

    __slots__ = ("id", "is_call", "match", "next", "op", "prev")

    def __init__(self, op: Operation | None, id: int, is_call: bool) -> None:
        self.op = op
        self.id = id
        self.is_call = is_call
        self.match: _Entry | None = None  # a call's return
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _linked(ops: Sequence[Operation]) -> _Entry:
    """The history as a linked list behind a sentinel head. At equal times calls come first,
    so an operation returning as another is called counts as concurrent with it."""
    timed: list[tuple[float, int, int, _Entry]] = []
    for index, op in enumerate(ops):
        call = _Entry(op, index, True)
        ret = _Entry(None, index, False)
        call.match = ret
        timed.append((op.call, 0, index, call))
        timed.append((math.inf if op.ret is None else op.ret, 1, index, ret))
    timed.sort(key=lambda item: item[:3])
    head = _Entry(None, -1, False)
    last = head
    for *_, entry in timed:
        last.next, entry.prev = entry, last
        last = entry
    return head


def _lift(call: _Entry) -> None:
    for entry in (call, call.match):
        assert entry is not None
        assert entry.prev is not None
        entry.prev.next = entry.next
        if entry.next is not None:
            entry.next.prev = entry.prev


def _unlift(call: _Entry) -> None:
    for entry in (call.match, call):
        assert entry is not None
        assert entry.prev is not None
        entry.prev.next = entry
        if entry.next is not None:
            entry.next.prev = entry


def is_linearizable(ops: Sequence[Operation]) -> bool:
    """Whether a history of operations on ONE key is linearizable (see the module docstring)."""
    head = _linked(ops)
    states: frozenset[State] = frozenset({INITIAL})
    linearized = 0
    explored: dict[int, set[frozenset[State]]] = defaultdict(set)
    stack: list[tuple[_Entry, frozenset[State]]] = []
    entry = head.next
    while head.next is not None:
        assert entry is not None
        if entry.is_call:
            assert entry.op is not None
            after = _apply(states, entry.op)
            bits = linearized | (1 << entry.id)
            if after and after not in explored[bits]:
                explored[bits].add(after)
                stack.append((entry, states))
                states, linearized = after, bits
                _lift(entry)
                entry = head.next
                continue
            entry = entry.next
        else:  # a return whose call is not linearized yet: undo the last choice
            if not stack:
                return False
            entry, states = stack.pop()
            linearized &= ~(1 << entry.id)
            _unlift(entry)
            entry = entry.next
    return True


def by_key(ops: Iterable[Operation]) -> dict[str, list[Operation]]:
    keyed: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        keyed[op.key].append(op)
    return dict(keyed)


def non_linearizable_keys(ops: Iterable[Operation]) -> list[str]:
    """The keys whose sub-history is not linearizable (empty: the whole history is)."""
    return sorted(key for key, part in by_key(ops).items() if not is_linearizable(part))


def check(ops: Iterable[Operation]) -> bool:
    """Whether a history over any number of keys is linearizable (key by key)."""
    return not non_linearizable_keys(ops)
