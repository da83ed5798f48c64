"""The memory-order rules of ``pysyncq.layout`` ("Memory order"), checked in
the code the kernels compile to.

x86 keeps loads in order by itself, so no run on this machine can show a
missing acquire; what can be shown is that the instructions are there, in
numba's LLVM IR, for the CPUs that need them (ARM, POWER).
"""

import introspect
import numba
import numpy as np
import pytest

from pysyncq import kernels
from pysyncq.kernels import check


@pytest.fixture(scope="module", autouse=True)
def compiled():
    introspect.warm_up()


#: The types the kernels take: the segment's words, and an int.
WORDS = numba.typeof(np.zeros(8, np.int64))
INT = numba.int64


def llvm_ir(dispatcher, *sigs):
    """The LLVM IR of ``dispatcher``'s function compiled afresh (numba shows
    no IR of code it loaded from its cache), for ``sigs`` (default: those of
    the warm-up)."""
    sigs = sigs or tuple(dispatcher.signatures)
    assert sigs, f"{dispatcher.__name__} was not compiled by the warm-up"
    opts = {k: v for k, v in dispatcher.targetoptions.items() if k not in ("cache", "nopython")}
    fresh = numba.njit(**opts)(dispatcher.py_func)
    for sig in sigs:
        fresh.compile(sig)
    return "\n".join(fresh.inspect_llvm(sig) for sig in sigs)


def baseline_fences():
    """Acquire fences numba emits by itself into a kernel that has none of
    its own (its reference counting, say)."""
    ir = llvm_ir(check.geometry_check, (WORDS,))
    return ir.count("fence acquire")


def test_record_check_loads_the_meta_word_atomically():
    """Rule 2: a reader that sees a published kind must also see the body the
    writer filled outside the lock before its swap."""
    ir = llvm_ir(check.record_check, (WORDS, INT, INT))
    assert "load atomic" in ir


def test_is_member_loads_the_slot_state_atomically():
    ir = llvm_ir(check.is_member, (WORDS, INT, INT))
    assert "load atomic" in ir


def test_a_lock_free_pop_fences_its_copy_from_its_membership_check():
    """Rule 3: pop_free copies, then checks that its slot still owns the
    records; the copy's loads must not be made after that check."""
    ir = llvm_ir(kernels.op_pop)
    assert ir.count("fence acquire") > baseline_fences(), "no fence of pop_free's own"
