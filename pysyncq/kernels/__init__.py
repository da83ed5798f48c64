"""Numba kernels: every read and write of the shared memory happens here.

Each kernel takes the segment as a 1-d uint8 array ``mem`` (plus ints, bytes
and small private arrays), returns a status code from :mod:`pysyncq.layout`
(or a tuple led by one), never raises, never blocks and never allocates on the
hot path.  The Python class turns codes into exceptions and does all waiting.

There are two layers:

``ring_*`` / ``slot_*`` / ``head_*``
    The ring itself.  Only called with the queue lock held, by the ``op_*``
    kernels below or directly by single-process tests, where ``w`` is the
    segment seen as int64 words (``mem.view(np.int64)``).

``op_*``
    What the class calls, one per public operation: try the lock once, run one
    ring kernel, release the lock.  The lock word holds the caller's process
    token, so a process that died holding it can be identified and the lock
    taken over (``op_steal``).  When the lock is held by someone else an
    ``op_*`` returns ``BUSY`` having done nothing.  The exception is
    ``op_pop``, which takes no lock at all (``pop_free`` says why that is
    safe): a reader's cursor has one writer, its owner.

Crash safety.  A process can die at any instruction.  Every ring kernel makes
its change visible with one final store (``H_WRITE_POS`` for an append, the
cursor for a pop, ``S_STATE`` for an open or a close), so a kernel cut short
leaves the ring as it was before, or as it is after a smaller complete step
(an append that wrapped publishes its padding first).  The derived state is
``H_HEAD``, which ``ring_recover`` recomputes, and the append count, which an
append stores before its write position, with a journal word that lets
``appends_recover`` publish a record whose holder died between the two.

The modules, each importing only those above it (and layout.py, numpy, numba):

``_intrinsics``  atomics, memcpy and the futex call as LLVM instructions
``_jit``         the registry: how each kernel is compiled, which Python calls
``check``        slot indexing, the checks of the header and records, their fields
``wait``         wait bits, wakes, futex sleeps and spinning
``lock``         the queue lock: tried once, released, looked at by a waiter
``slots``        member slots: open, leave, recover, list; the head they hold
``write``        formatting, appending, publishing reservations, pins
``read``         scanning for the next record, popping, peeking, committing
``batch``        many records per call: extend's and pop_many's ring kernels
``ops``          the ``op_*`` entry points: the lock tried once around a ring kernel
"""

# Every name of the one module kernels.py was (less the tests' oracles, now in
# tests/oracles.py), as ``pysyncq.kernels.<name>``; newer names live in their modules.
# ruff: noqa: F401
from ._intrinsics import (
    HAVE_FUTEX,
    atomic_add,
    atomic_cas,
    atomic_load,
    atomic_store,
    atomic_xchg,
    copy_bytes,
    futex,
)
from ._jit import _JIT
from .batch import (
    FMT_PER_MESSAGE,
    SEG_WORDS,
    _fmt_code,
    _head_equal,
    ring_pop_many,
    ring_put_many,
)
from .check import (
    _MAX_SLOTS,
    _SEQ32,
    _corrupt,
    geometry_check,
    header_check,
    is_member,
    record_check,
    record_lens,
    slot_hwm,
    slot_word,
    table_slots,
)
from .lock import lock_prepare_wait, lock_release
from .ops import (
    op_adopt,
    op_append,
    op_append_array,
    op_commit,
    op_commit_to,
    op_extend,
    op_leave,
    op_linger,
    op_open,
    op_peek,
    op_pop,
    op_pop_many,
    op_read_ahead,
    op_reserve,
    op_steal,
)
from .read import (
    _POP_TRIES,
    _next_in_batch,
    _next_record,
    _reader_move,
    _reader_start,
    _scan,
    _screened,
    pop_free,
    ring_commit,
    ring_peek,
)
from .slots import (
    count_members,
    head_refresh,
    members,
    ring_recover,
    ring_void,
    slot_leave,
    slot_linger,
    slot_open,
    slot_set_name,
)
from .wait import (
    _FUTEX_WAIT,
    _FUTEX_WAKE,
    _INT_MAX,
    futex_wait,
    seq_load,
    set_waiting,
    spin_for,
    store_wait,
    wake_flags,
    wake_now,
)
from .write import (
    _NO_DATA,
    _copy_in,
    _make_room,
    appends_recover,
    count_and_publish,
    flags_set,
    pin_set,
    record_publish,
    ring_format,
    ring_put,
)
