"""A publisher's Receipt: its result fires once every hold is done, with the
first error if any destination failed; a hold is done once."""

from __future__ import annotations

import pytest

from flowmq.core.receipts import Receipt


def _outcome(receipt):
    seen = []
    receipt.result().addCallbacks(lambda result: seen.append(("stored", result)),
                                  lambda failure: seen.append(("failed", failure.value)))
    return seen


def test_the_result_waits_for_every_hold_and_reports_the_first_error():
    receipt = Receipt()
    first, second, third = receipt.hold(), receipt.hold(), receipt.hold()
    seen = _outcome(receipt)
    full, broken = ValueError("full"), OSError("broken")
    first(None)
    second(full)
    assert seen == [] and receipt.pending == 1
    third(broken)
    assert seen == [("failed", full)]


def test_the_result_is_none_when_every_destination_stored_it():
    receipt = Receipt()
    done = receipt.hold()
    seen = _outcome(receipt)
    done(None)
    assert seen == [("stored", None)]


def test_no_hold_means_stored_at_once_and_a_hold_is_done_once():
    assert _outcome(Receipt()) == [("stored", None)]
    receipt = Receipt()
    done = receipt.hold()
    done(None)
    with pytest.raises(RuntimeError):
        done(None)
    assert _outcome(receipt) == [("stored", None)]
    with pytest.raises(RuntimeError):  # the result is out: a late destination cannot hold it
        receipt.hold()
