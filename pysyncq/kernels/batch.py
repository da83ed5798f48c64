"""Batches (pysyncq.batch): many records per kernel call and per lock, the ring
kernels of ``extend`` and ``pop_many``."""

from collections import namedtuple

import numpy as np

from ..layout import (
    APPEND_SKIP,
    C_RECORD,
    CODE_MASK,
    CORRUPT,
    H_CAPACITY,
    H_DATA_SEQ,
    H_HEAD,
    H_RING_OFFSET,
    H_WRITE_POS,
    KIND_ARRAY,
    NEED_SPACE,
    NOT_MEMBER,
    OK,
    REC_HEADER,
    S_CURSOR,
    S_FLAGS,
    S_RECEIVED,
    S_SCREENED,
    SEQ_MASK,
    SEQ_SHIFT,
    SF_READER,
    TOO_LARGE,
    W_DATA,
)
from ._intrinsics import atomic_add, atomic_cas, atomic_load, copy_bytes
from ._jit import kernel
from .check import (
    _corrupt,
    header_check,
    is_member,
    meta_kind,
    record_lens,
    record_meta,
    record_size,
    slot_word,
)
from .read import _next_in_batch, _reader_move, _reader_start
from .wait import wake_flags
from .write import _copy_in, _make_room, count_and_publish

#: ``ring_put_many``'s answer: ``status``, ``count`` records went in, and the
#: byte ``off`` of the blob where the next body starts.
PutMany = namedtuple("PutMany", "status count off")
#: ``ring_pop_many``'s answer: ``status``, ``count`` records popped, the bytes
#: of the format (``fmt_len``), the runs in ``segs`` and the array records.
PopMany = namedtuple("PopMany", "status count fmt_len runs arrays")


@kernel()
def ring_put_many(w, mem, slot, token, sender, mtype, blob, lens, kinds, kind, first, off, count):
    """Append bodies ``first .. count-1`` from ``slot`` while they fit, as
    ``ring_put`` would one by one, with the checks made once.  Lock held.

    The bodies lie back to back in ``blob``, body ``first`` at byte ``off``.
    Body ``i`` is ``lens[i]`` bytes long, or ``lens[0]`` for every body when
    ``lens`` has one entry; its kind is ``kinds[i]``, or ``kind`` for every
    body when ``kinds`` is empty (each a ``KIND_*``, with ``APPEND_SKIP`` as
    for ``ring_put``).  Each record is counted and published
    (``count_and_publish``) as soon as it is written, so a writer killed here
    leaves whole records only, each counted.

    Returns ``PutMany(status, n, off)``: ``n`` records went in and ``off`` is
    the byte of ``blob`` where the next body starts.  ``status`` is ``OK`` (with
    the ``WAKE_*`` bits of all) when all went in, else that of the first that
    did not, as ``ring_put`` gives it (``FULL`` with the space sequence above
    ``SEQ_SHIFT``, ``TOO_LARGE``, ``NOT_MEMBER``, ``CORRUPT``), with the
    ``WAKE_*`` bits of those before.  A body that lies outside ``blob`` (a bad
    call, never a message) is ``TOO_LARGE``.
    """
    bad = header_check(w)
    if bad:
        return PutMany(_corrupt(bad), 0, off)
    if not is_member(w, slot, token):
        return PutMany(NOT_MEMBER, 0, off)
    cap = w[H_CAPACITY]
    base = w[H_RING_OFFSET]
    heads = len(sender) + len(mtype)
    reader = w[slot_word(slot, S_FLAGS)] & SF_READER
    cw = slot_word(slot, S_CURSOR)
    uniform = len(lens) == 1
    pos = w[H_WRITE_POS]
    head = w[H_HEAD]
    flags = 0
    status = OK
    n = 0
    screened = 0
    for i in range(first, count):
        if not uniform and i >= len(lens):
            status = TOO_LARGE
            break
        blen = lens[0] if uniform else lens[i]
        k = kinds[i] if len(kinds) > i else kind
        if blen < 0 or off < 0 or off + blen > len(blob):
            status = TOO_LARGE
            break
        payload = heads + blen
        size = record_size(payload)
        if size > cap:
            status = TOO_LARGE
            break
        room = _make_room(w, pos, head, size, cap)
        status, pos, head = room.status, room.pos, room.head
        flags |= room.flags
        if status & CODE_MASK:
            break
        at = base + pos % cap
        w[at // 8] = size
        w[at // 8 + 1] = record_meta(len(sender), len(mtype), size - REC_HEADER - payload, k, slot)
        p = _copy_in(mem, at + REC_HEADER, sender)
        p = _copy_in(mem, p, mtype)
        copy_bytes(mem, p, blob, off, blen)
        for q in range(p + blen, at + size):
            mem[q] = 0
        count_and_publish(w, slot, pos + size)  # this record becomes visible here
        if k & APPEND_SKIP and reader and atomic_cas(w, cw, pos, pos + size) == pos:
            screened += 1
        pos += size
        off += blen
        n += 1
    if n:
        atomic_add(w, slot_word(slot, S_SCREENED), screened)
        atomic_add(w, H_DATA_SEQ, n)  # one bump per record, as n appends make
        flags |= wake_flags(w, W_DATA)
    return PutMany(status | flags, n, off)


#: Bytes of ``fmt`` that ``ring_pop_many`` needs free for one more message:
#: three struct codes of at most 15 digits and a letter.
FMT_PER_MESSAGE = 48
#: The struct codes of ``fmt``: ``<n>s`` a field's bytes, ``<n>x`` bytes
#: passed over (an array record's body, which the caller decodes itself).
_FIELD = ord("s")
_SKIP = ord("x")
_DIGIT_0 = ord("0")

#: int64 words of ``segs`` per run of messages (see ``ring_pop_many``), and
#: where each of them is in a run.
SEG_WORDS = 4
RUN_COUNT = 0  # messages in the run
RUN_NEW_HEAD = 1  # 1: the run starts with a sender and a type in out
RUN_OFFSET = 2  # an array record's body: where it is in out
RUN_LENGTH = 3  # and its length; BODIES for a run of str or bytes bodies
BODIES = -1
#: ``ring_pop_many``'s offset of the last sender and type before it copied any.
_NO_HEAD = -1


@kernel()
def _fmt_code(fmt, fp, value, letter):
    """Write struct code ``<value><letter>`` (e.g. ``64s``) at ``fmt[fp]``;
    return the position after it.  ``value`` >= 0."""
    digits = 1
    v = value
    while v >= 10:
        v //= 10
        digits += 1
    v = value
    for d in range(digits - 1, -1, -1):
        fmt[fp + d] = _DIGIT_0 + v % 10
        v //= 10
    fmt[fp + digits] = letter
    return fp + digits + 1


@kernel()
def _head_equal(mem, p, out, q, n):
    for i in range(n):
        if mem[p + i] != out[q + i]:
            return False
    return True


@kernel()
def ring_pop_many(w, mem, slot, token, scr, out, fmt, segs, limit):
    """Pop up to ``limit`` records that ``slot`` does not screen, for
    ``pysyncq.batch``, with one move of the cursor at the end.  Lock held.

    Into ``out`` go, back to back, each body, preceded by the sender and type
    when they differ from the previous message's (the usual batch has one
    sender and one type: they are copied, compared and decoded once).  Into
    ``fmt`` goes a ``struct`` format that unpacks ``out``: ``<n>s`` for each
    sender, type and body, ``<n>x`` for the body of an array record (which
    the caller decodes from ``out`` itself).  Into ``segs`` go runs of
    messages, ``SEG_WORDS`` words each: ``(count, new_head, offset,
    length)`` (``RUN_*``), where ``new_head`` says the run starts with a
    sender and type, and ``length`` is ``BODIES`` (-1) for a run of ``count``
    str or bytes bodies, or for an array record (``count`` 1) the length of
    its body at ``offset`` in ``out``.  A run holds one sender and type and no array.  It stops when
    ``fmt`` or ``segs`` has no room for one more message (``OK``).

    Returns ``PopMany(status, count, fmt_len, nsegs, arrays)``, ``arrays``
    the number of array records; ``status`` is ``OK`` (``limit`` popped, or no room
    left), or what ended the batch: ``EMPTY``/``PENDING`` with the data
    sequence above ``SEQ_SHIFT``, ``NEED_SPACE`` with the bytes ``out`` must
    hold for the next record (alone) above it, ``NOT_MEMBER``, ``CORRUPT``;
    with the ``WAKE_*`` bits of the cursor move.
    """
    bad = header_check(w)
    if bad:
        return PopMany(_corrupt(bad), 0, 0, 0, 0)
    cursor = _reader_start(w, slot, token)
    if cursor.status != OK:  # NOT_MEMBER, or CORRUPT (C_CURSOR)
        return PopMany(cursor.status, 0, 0, 0, 0)
    start = cursor.pos
    seq = atomic_load(w, H_DATA_SEQ) & SEQ_MASK
    end = w[H_WRITE_POS]
    cur = start
    at = 0  # bytes used in out
    fp = 0  # bytes used in fmt
    ns = 0  # runs in segs
    n = 0
    prev = _NO_HEAD  # offset in out of the last sender and type copied
    prev_s = prev_t = 0
    last_array = False
    arrays = 0
    sw = scr.view(np.int64)
    status = OK
    while n < limit:
        if fp + FMT_PER_MESSAGE > len(fmt) or SEG_WORDS * (ns + 1) > len(segs):
            break
        found = _next_in_batch(w, mem, slot, scr, sw, cur, end)
        cur = found.pos  # what the scan passed is read, whatever it found
        if found.code != OK:
            code = found.code
            status = code | (seq << SEQ_SHIFT) if code != CORRUPT else _corrupt(C_RECORD)
            break
        slen, tlen, blen = record_lens(found.meta, found.size)
        is_array = meta_kind(found.meta) == KIND_ARRAY
        p = found.offset
        hl = slen + tlen
        same = prev != _NO_HEAD and slen == prev_s and tlen == prev_t
        same = same and _head_equal(mem, p, out, prev, hl)
        need = blen if same else hl + blen
        if at + need > len(out):
            status = NEED_SPACE | ((hl + blen) << SEQ_SHIFT)
            break
        if not same:
            copy_bytes(out, at, mem, p, hl)
            prev, prev_s, prev_t = at, slen, tlen
            at += hl
            fp = _fmt_code(fmt, fp, slen, _FIELD)
            fp = _fmt_code(fmt, fp, tlen, _FIELD)
        if ns == 0 or not same or is_array or last_array:
            run = SEG_WORDS * ns
            segs[run + RUN_COUNT] = 1
            segs[run + RUN_NEW_HEAD] = 0 if same else 1
            segs[run + RUN_OFFSET] = at if is_array else 0
            segs[run + RUN_LENGTH] = blen if is_array else BODIES
            ns += 1
        else:
            segs[SEG_WORDS * (ns - 1) + RUN_COUNT] += 1
        last_array = is_array
        if is_array:
            arrays += 1
        copy_bytes(out, at, mem, p + hl, blen)
        at += blen
        fp = _fmt_code(fmt, fp, blen, _SKIP if is_array else _FIELD)
        cur += found.size
        n += 1
    if n:
        w[slot_word(slot, S_RECEIVED)] += n
    moved = _reader_move(w, slot, start, cur, status)
    return PopMany(moved, n, fp, ns, arrays)
