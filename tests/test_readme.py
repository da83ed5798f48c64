"""The README's tour runs as written (issue 18: written with the worker
group, its first example without a helper).

Every ``python`` block between "## A tour" and "## API" is a whole program:
each runs in a fresh interpreter, bounded by a timeout, and must leave no
queue behind.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import introspect
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.timeout(300)


def tour_programs():
    text = README.read_text()
    tour = text[text.index("## A tour") : text.index("## API")]
    return re.findall(r"```python\n(.*?)```", tour, re.S)


def test_the_tour_has_its_programs():
    programs = tour_programs()
    assert len(programs) >= 3
    assert "Workers.map" in programs[0]
    assert not any("def send" in p for p in programs)


@pytest.mark.parametrize("index", range(len(tour_programs())))
def test_a_tour_program_runs(tmp_path, index):
    path = tmp_path / f"tour{index}.py"
    path.write_text(tour_programs()[index])
    before = set(introspect.queues_in_shm())
    r = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env={**os.environ, "PYSYNCQ_QUIET": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    left = set(introspect.queues_in_shm()) - before
    assert not left, f"the program left {left}"
