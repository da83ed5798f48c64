"""A long run: a million messages of random sizes through a small ring."""

import introspect
import pytest
import workers

from pysyncq import PySyncQ
from pysyncq.layout import H_WRITE_POS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_a_million_messages_through_a_small_ring(qname, procs):
    """Four writers and three readers; payloads from 0 B to a quarter of the
    ring, which wraps around tens of thousands of times.  Every reader checks
    every checksum and the exact sequence of every writer, and at the end that
    it received all of each writer's messages."""
    writers, readers, per_writer, size = 4, 3, 250_000, 4096
    max_payload = size // 4 - 64  # leaves room for the sender, type and check header
    q = PySyncQ(qname, size=size)
    counts = {w: per_writer for w in range(writers)}
    rs = [procs.start(workers.checked_reader, q, f"r{i}", writers, counts) for i in range(readers)]
    q.open("parent", reader=False)
    q.wait_for_readers(readers, timer=60)
    ws = [
        procs.start(workers.stress_writer, q, w, per_writer, max_payload, w) for w in range(writers)
    ]
    procs.join(ws + rs, timeout=540)
    assert q.stats().appended == writers * (per_writer + 1)
    print(f"the ring wrapped {int(introspect.words(q)[H_WRITE_POS]) // size} times")
    q.close()
