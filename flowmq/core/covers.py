"""Filter containment: does one unified topic filter match every topic that
another matches? Used wherever a rule is about sets of topics rather than
one topic: permissions (an allowed filter must cover the requested one) and
JetStream consumer filters (nats-server refuses two filter subjects of a
consumer only when one takes in the other).
"""

from __future__ import annotations

from flowmq.core.router import filter_matches
from flowmq.core.topics import MULTI_LEVEL, SEPARATOR, SINGLE_LEVEL

#: Position sets ``filter_covers`` may compute before answering False (see there).
_COVERS_BUDGET = 10_000
#: Stands, in ``filter_covers``, for any level that the general filter does not name.
_OTHER = None


def filter_covers(general: str, specific: str) -> bool:
    """Does filter ``general`` match every topic that filter ``specific`` matches?

    A topic has at least one level. A ``#`` in ``general`` covers any run of
    levels of ``specific`` (wildcards included), a ``+`` one level (a literal
    or ``+``), a literal only itself, and these combine as the sets of topics
    do: ``+/#`` covers ``#/a`` and ``#/+``.

    Exactly: a level of ``specific`` that ``general`` does not name (and each
    ``+``) can only be matched by a wildcard of ``general``, like every other
    such level, so all of them are read as one level ``_OTHER``, and a ``#``
    of ``specific`` as any number of ``_OTHER`` levels (a literal of
    ``general`` in its place would only be easier to match). The function
    runs ``general`` as a set-of-positions automaton over ``specific`` and
    keeps every set the ``#`` runs can lead to; covered means every set
    reached at the end accepts. A pathological pair (it takes a general
    filter like ``#/a/+/+/+/+/+/+``) that would need more than
    ``_COVERS_BUDGET`` steps gets False: never covered by mistake, which is
    the safe answer for both allow lists (refuse) and deny lists (the
    per-delivery ``may_receive`` check still holds the denied topics back).
    """
    g = general.split(SEPARATOR)
    s = specific.split(SEPARATOR)
    if SINGLE_LEVEL not in s and MULTI_LEVEL not in s:
        return filter_matches(g, s)  # one topic
    if MULTI_LEVEL in s and MULTI_LEVEL not in g:
        return False  # topics of any length against topics of one length
    if all(level == MULTI_LEVEL for level in s):
        s = [SINGLE_LEVEL, MULTI_LEVEL]  # '#' alone: one level or more, as topics have
    named = set(g)
    end = len(g)
    sets = {_closure(g, (0,))}
    budget = _COVERS_BUDGET
    for level in s:
        if level == MULTI_LEVEL:
            frontier = sets
            while frontier and budget >= 0:
                budget -= len(frontier)
                frontier = {_step(g, positions, _OTHER) for positions in frontier} - sets
                sets |= frontier
        else:
            budget -= len(sets)
            symbol = level if level in named and level != SINGLE_LEVEL else _OTHER
            sets = {_step(g, positions, symbol) for positions in sets}
        if budget < 0:
            return False
        if frozenset() in sets:
            return False  # some topic of ``specific`` has already left ``general``
    return all(end in positions for positions in sets)


def _closure(g: list, positions) -> frozenset:
    """Positions in ``g`` (levels matched so far), with each ``#`` also matching
    nothing; positions before the last ``#`` reached are dropped, since that
    ``#`` can take over whatever they could still match."""
    result = set()
    top = 0
    for p in positions:
        while p < len(g) and g[p] == MULTI_LEVEL:
            result.add(p)
            top = max(top, p)
            p += 1
        result.add(p)
    return frozenset(p for p in result if p >= top)


def _step(g: list, positions: frozenset, symbol) -> frozenset:
    """The positions after matching one more topic level ``symbol``."""
    following = []
    for p in positions:
        if p < len(g):
            level = g[p]
            if level == MULTI_LEVEL:
                following.append(p)
            elif level == SINGLE_LEVEL or level == symbol:
                following.append(p + 1)
    return _closure(g, following)
