"""flowmq.buffers: a payload put together from the reads it arrived in is
exactly their bytes from the start offset in the first read to the stop
offset in the last, and a bytes object, however the reads are cut."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flowmq.buffers import joined, spliced


@st.composite
def reads_and_offsets(draw):
    reads = draw(st.lists(st.binary(min_size=1, max_size=40), min_size=2, max_size=5))
    start = draw(st.integers(0, len(reads[0])))
    stop = draw(st.integers(0, len(reads[-1])))
    return reads, start, stop


@given(reads_and_offsets())
def test_joined_is_the_bytes_from_start_to_stop(case):
    reads, start, stop = case
    whole = reads[0][start:] + b"".join(reads[1:-1]) + reads[-1][:stop]
    got = joined(reads, start, stop)
    assert got == whole
    assert type(got) is bytes


@given(st.binary(max_size=40), st.binary(max_size=40), st.data())
def test_spliced_is_the_tail_of_one_and_the_head_of_the_other(first, second, data):
    start = data.draw(st.integers(0, len(first)))
    stop = data.draw(st.integers(0, len(second)))
    got = spliced(first, start, second, stop)
    assert got == first[start:] + second[:stop]
    assert type(got) is bytes
