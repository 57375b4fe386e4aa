"""Rounds: the same runs made several times, reported as their median.

On a shared machine one run of a scenario can be a fifth faster or slower
than the next. With ``--rounds N`` every server runs its scenarios N times
(the servers taking turns, each round in the other order) and each
scenario is reported by its median round: all of that round's figures, so
that they still belong together, plus one row with the headline figure of
every round. A scenario counts as complete only if every round was.
"""

from __future__ import annotations

#: The figure a round is ranked by, where a result has it; else its first rate.
HEADLINE = "receive msgs/s"


def headline(result):
    """The figure ``result``'s rounds are ranked by (a figure dict), or None."""
    figures = result["figures"]
    for figure in figures:
        if figure["name"] == HEADLINE:
            return figure
    for figure in figures:
        if figure["kind"] == "rate":
            return figure
    return figures[0] if figures else None


def merge_all(per_round: list) -> list:
    """One result per scenario and size for a server's rounds (a list of
    result lists, one per round), in the order they first ran. A scenario
    that a round left out (a server's JetStream found in one round and not
    another) is the median of the rounds that ran it."""
    by_run: dict = {}
    for results in per_round:
        for result in results:
            by_run.setdefault((result["scenario"], result["size"]), []).append(result)
    return [merge(rounds) for rounds in by_run.values()]


def merge(rounds: list) -> dict:
    """One result for the results of one scenario's rounds, in round order:
    the median round among the complete ones (of an even number, the lower
    of the two in the middle), else the first that has figures."""
    if len(rounds) == 1:
        return rounds[0]
    values = []
    for result in rounds:
        figure = headline(result)
        values.append(figure["value"] if figure is not None else None)
    ranked = [i for i in range(len(rounds)) if values[i] is not None and rounds[i]["complete"]]
    ranked.sort(key=lambda i: values[i])
    if ranked:
        median = rounds[ranked[(len(ranked) - 1) // 2]]
    else:
        median = next((result for result in rounds if result["figures"]), rounds[0])
    merged = dict(median, figures=list(median["figures"]), details=dict(median["details"]))
    merged["details"]["rounds"] = values
    figure = headline(median)
    if figure is not None:
        merged["figures"].append({"name": "%s, each round" % figure["name"], "kind": "text",
                                  "value": " ".join("-" if v is None else _short(v) for v in values)})
    failed = [(n, result) for n, result in enumerate(rounds, 1) if not result["complete"] or result["errors"]]
    if failed:
        n, first = failed[0]
        merged["complete"] = all(result["complete"] for result in rounds)
        merged["check"] = "%s (round %d of %d)" % (first["check"], n, len(rounds))
        merged["errors"] = ["round %d: %s" % (n, error) for n, result in failed for error in result["errors"]]
    return merged


def _short(value) -> str:
    """A figure, short: 612k, 17.3k, 1.94M, 8,570, 0.5."""
    if value >= 999500:  # in k, %.3g would print 1e+03k
        return "%.3gM" % (value / 1e6)
    if value >= 1e4:
        return "%.3gk" % (value / 1e3)
    return "{:,.0f}".format(value) if value >= 100 else "%.3g" % value
