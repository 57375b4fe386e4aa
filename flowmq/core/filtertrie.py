"""Which topic filters overlap: a trie of filters, and a walk of two tries at once.

Two filters *overlap* when some topic matches both: ``a/+/c`` and ``a/b/#``
do (``a/b/c``), ``a/+/c`` and ``a/b/d`` do not. JetStream refuses a stream
whose subjects overlap another stream's, a stream with two subjects that
overlap each other, and a consumer whose filter subjects do. Comparing every
filter with every other one costs O(n^2 x levels): 1,000 subjects of 128
levels would have taken about 48 s.

So each side's filters go into a ``FilterTrie`` (a trie over levels as the
router's, ``TrieNode``: literal children and one slot each for ``+`` and
``#``; a node knows the *owners* of the filters that end there), and
``overlapping`` walks two tries together. A state of the walk is a pair of
nodes (x, y) that one topic prefix reaches in both tries. From it the walk
takes one more topic level on both sides, in every way the two nodes allow:
the same literal child on both (looked up from the side with fewer
children), a literal on one side against ``+`` (or a ``#`` still open) on
the other, a wildcard against a wildcard; and it may enter a ``#`` on either
side without taking a level (``#`` matches zero levels too). A state whose
two nodes both end filters is an overlap of those filters; so ``a/+/c``
meets ``a/b/#`` through the states (a, a), (a/+, a/b), then (a/+/c, a/b/#)
by the literal ``c`` against the open ``#``.

Bounds. A state is expanded at most once: a pair that holds a ``#`` node is
remembered (only such pairs can be reached twice, through the zero-level
move and through ``#`` taking a level), and any other pair has exactly one
parent pair. So a walk expands at most |A| x |B| states. Where the filters
differ in literals it follows only the prefixes both tries share (linear in
the smaller trie), and a wildcard on one side visits the other side's nodes
below it once (linear in that side). Wildcards on both sides at different
levels can still make it quadratic: deciding whether two sets of such
filters overlap anywhere is the orthogonal-vectors problem, for which no
algorithm much below quadratic is known. So every walk also has a budget of
steps (``budget``: a base plus a number per level of the filters being
checked, so linear in the request that asks): past it the walk raises
``OverlapTooComplex`` rather than hold the event loop.
"""

from __future__ import annotations

from itertools import repeat

from flowmq.core.router import TrieNode
from flowmq.core.topics import MULTI_LEVEL, SEPARATOR, SINGLE_LEVEL

#: Steps any walk may take, plus STEPS_PER_LEVEL for each level of the
#: filters being checked (see ``budget``).
BASE_STEPS = 500_000
STEPS_PER_LEVEL = 8


class OverlapTooComplex(Exception):
    """A walk that would take more steps than its budget."""


class _FilterNode(TrieNode):
    __slots__ = ("owners", "loops")

    def __init__(self):
        TrieNode.__init__(self)
        self.owners = None  # owner -> None: whose filters end at this node (a dict once there is one)
        self.loops = False  # a '#' node: it may take any number of further levels


class FilterTrie:
    """A set of unified topic filters, each held by one or more owners.

    ``levels`` is the total number of levels of the filters added (the
    measure of the walk's budget).
    """

    def __init__(self, entries=()):
        self.root = _FilterNode()
        self.levels = 0
        for topic_filter, owner in entries:
            self.add(topic_filter, owner)

    def add(self, topic_filter: str, owner) -> bool:
        """Add ``owner``'s filter; False if that owner already has it."""
        levels = topic_filter.split(SEPARATOR)
        node = self.root
        for level in levels:
            child = node.children.get(level)
            if child is None:
                if level == SINGLE_LEVEL or level == MULTI_LEVEL:
                    child = node.step(level, True)
                    child.loops = level == MULTI_LEVEL
                else:
                    child = node.children[level] = _FilterNode()
            node = child
        if node.owners is None:
            node.owners = {}  # made only where a filter ends: deep tries are mostly inner nodes
        elif owner in node.owners:
            return False
        node.owners[owner] = None
        self.levels += len(levels)
        return True

    def remove(self, topic_filter: str, owner) -> bool:
        """Remove ``owner``'s filter (and the nodes it alone needed); False if absent."""
        levels = topic_filter.split(SEPARATOR)
        path = []
        node = self.root
        for level in levels:
            child = node.step(level, False)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if not node.owners or owner not in node.owners:
            return False
        del node.owners[owner]
        self.levels -= len(levels)
        for parent, level in reversed(path):
            if node.owners or node.children or node.single or node.multi:
                break
            parent.drop(level)
            node = parent
        return True


def budget(levels: int) -> int:
    """The most steps a walk checking filters of ``levels`` levels in all may take."""
    return BASE_STEPS + STEPS_PER_LEVEL * levels


def overlapping(a: FilterTrie, b: FilterTrie, steps: int = -1):
    """Yield ``(owners in a, owners in b)`` for each pair of nodes, one of
    each trie, whose filters overlap (``a`` may be ``b``: a node then also
    meets itself). The owners are dicts (owner -> None); stop iterating when
    the answer is known.

    ``steps``: the walk's budget, ``budget(a.levels)`` by default (``a`` is
    the side being checked). Raises OverlapTooComplex past it.
    """
    if steps < 0:
        steps = budget(a.levels)
    stack = [(a.root, b.root)]
    pop, push, extend = stack.pop, stack.append, stack.extend
    seen = set()  # the pairs with a '#' node that were pushed

    def pair(x, y):
        if (x.loops or y.loops) and (x, y) in seen:
            return
        if x.loops or y.loops:
            seen.add((x, y))
        push((x, y))

    while stack:
        x, y = pop()
        if x.owners and y.owners:
            yield x.owners, y.owners
        x_children, y_children = x.children, y.children
        x_single, y_single = x.single, y.single
        # A step per state and per child looked at (or paired with a '+').
        steps -= 1 + min(len(x_children), len(y_children))
        if y_single is not None:
            steps -= len(x_children)
        if x_single is not None:
            steps -= len(y_children)
        if steps < 0:
            raise OverlapTooComplex("the overlap check needs more steps than its budget")
        # Literal and '+' children are never '#' nodes: their pairs go on the
        # stack as they are; pairs with a '#' node go through ``pair``.
        if x_children and y_children:
            if x_children is y_children:  # a trie walked against itself
                extend(zip(x_children.values(), x_children.values()))
            elif len(x_children) <= len(y_children):
                for level, child in x_children.items():
                    other = y_children.get(level)
                    if other is not None:
                        push((child, other))
            else:
                for level, other in y_children.items():
                    child = x_children.get(level)
                    if child is not None:
                        push((child, other))
        if y_single is not None and x_children:
            extend(zip(x_children.values(), repeat(y_single)))
        if x_single is not None:
            if y_children:
                extend(zip(repeat(x_single), y_children.values()))
            if y_single is not None:
                push((x_single, y_single))
        if x.multi is None and y.multi is None and not x.loops and not y.loops:
            continue
        # '#' matching zero levels ...
        if x.multi is not None:
            pair(x.multi, y)
        if y.multi is not None:
            pair(x, y.multi)
        # ... and an open '#' taking one more level (against a literal, '+' or '#').
        if x.loops:
            steps -= len(y_children)
            for other in y_children.values():
                pair(x, other)
            if y_single is not None:
                pair(x, y_single)
        if y.loops:
            steps -= len(x_children)
            for child in x_children.values():
                pair(child, y)
            if x_single is not None:
                pair(x_single, y)


def distinct_owners(mine: dict, theirs: dict):
    """A pair of different owners, one of ``mine`` and one of ``theirs``, or None."""
    for one in mine:
        for other in theirs:
            if one != other:
                return one, other
    return None

