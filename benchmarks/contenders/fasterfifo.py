"""faster-fifo (optional: ``run.py --install-optional`` puts it in ``.peers/optional``)."""

from harness import FOREVER

from . import Transport
from .stdlib import put_kill


class FasterFifoTransport(Transport):
    """One ``faster_fifo.Queue`` per child (as large as the ring, or 4
    messages), one back; one ``put``/``get`` of a pickled (type, body) per
    message."""

    name = "faster-fifo"
    requires = ("faster_fifo",)
    pip = ("faster-fifo",)
    counts = {"echo": 4000, "fanout": 15000}

    def __init__(self, nchildren, capacity, tag, msg_size):
        import faster_fifo

        size = max(capacity, 4 * msg_size)
        self.out = [faster_fifo.Queue(max_size_bytes=size) for _ in range(nchildren)]
        self.back = faster_fifo.Queue(max_size_bytes=size)

    def parent_open(self):
        outs = [q.put for q in self.out]
        get = self.back.get

        def send(typ, body):
            m = (typ, body)
            for put in outs:
                put(m, True, FOREVER)

        self.send = self.send_stream = send
        self.recv = lambda: get(True, FOREVER)

    def child_open(self, i):
        get = self.out[i].get
        put = self.back.put

        def send(typ, body):
            put((typ, bytes(body)), True, FOREVER)

        self.send = send
        self.recv = lambda: get(True, FOREVER)

    def send_kill(self):
        put_kill(self.out)

    def child_close(self):
        pass

    def parent_close(self):
        for q in [*self.out, self.back]:
            q.close()

    def cleanup(self):
        return []
