"""Command line: ``python -m pysyncq {demo,list,stat,clean,bridge}``."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pysyncq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the multi-process demo")
    demo.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    demo.add_argument("--duration", type=float, default=5.0, help="seconds to run (default 5)")
    demo.add_argument("--size", type=int, default=256, help="queue size in bytes (default 256)")
    demo.add_argument(
        "--start",
        choices=["fork", "spawn", "forkserver"],
        default=None,
        help="multiprocessing start method (default: the platform's)",
    )
    sub.add_parser(
        "list", help="list the pysyncq queues in /dev/shm: state, size, members, bytes used"
    )
    stat = sub.add_parser(
        "stat",
        help="show a queue and its members, read-only (joins nothing, takes no lock)",
    )
    stat.add_argument("name", help="the queue")
    stat.add_argument("--json", action="store_true", help="one JSON object (a line per refresh)")
    stat.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=1.0,
        default=None,
        metavar="SECONDS",
        help="refresh in place every SECONDS (default 1) with the message rate, until Ctrl-C",
    )
    clean = sub.add_parser(
        "clean", help="remove queues left behind by processes that have all ended"
    )
    clean.add_argument("names", nargs="*", help="queues to remove (default: every stale one)")
    clean.add_argument("--force", action="store_true", help="remove even queues in use")
    bridge = sub.add_parser(
        "bridge", help="relay a local queue both ways through a Redis stream (needs redis-py)"
    )
    _bridge_arguments(bridge)
    args = parser.parse_args(argv)

    if args.command == "bridge":
        try:
            from .bridge import main as bridge_main
        except ImportError as e:
            print(f"python -m pysyncq bridge: {e}", file=sys.stderr)
            return 2
        return bridge_main(args)

    if args.command == "demo":
        if args.workers < 1 or args.duration < 0:
            parser.error("--workers must be >= 1 and --duration >= 0")
        from .demo import main as demo_main

        return demo_main(args.workers, args.duration, args.size, args.start)

    if args.command in ("list", "stat"):
        from . import _cli_stat

        if args.command == "list":
            return _cli_stat.list_main()
        return _cli_stat.stat_main(args.name, args.json, args.watch)

    from ._lifecycle import list_queues, remove

    names = args.names or [name for name, in_use in list_queues() if not in_use]
    status = 0
    for name in names:
        try:
            removed = remove(name, force=args.force)
        except Exception as e:  # noqa: BLE001 - report each name and carry on
            print(f"{name}: {e}", file=sys.stderr)
            status = 1
        else:
            print(f"{name}: {'removed' if removed else 'no such queue'}")
    return status


def _bridge_arguments(p):
    """The bridge's arguments, declared here so that --help works without redis-py."""
    p.add_argument("name", help="local queue (created if missing)")
    p.add_argument("url", help="Redis URL: redis://[:password@]host:port/db or rediss://...")
    p.add_argument("--stream", default=None, help="stream key (default: the queue name)")
    p.add_argument(
        "--size",
        type=int,
        default=1 << 20,
        help="size in bytes of the local queue if the bridge creates it (default 1 MiB)",
    )
    p.add_argument(
        "--max-len",
        type=int,
        default=None,
        help="bound the stream to this many entries (default: unbounded, or the bound set "
        "by another bridge)",
    )
    p.add_argument(
        "--id",
        default=None,
        dest="origin",
        help="this bridge's id, unique per stream and kept across restarts "
        "(default: host name:queue name)",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=300.0,
        help="seconds after which a silent bridge stops holding the stream back (default 300)",
    )
    p.add_argument(
        "--leave",
        action="store_true",
        help="remove for good a bridge that is gone (killed, not to be started again): free "
        "the slot that holds its local queue, and its position in Redis; then exit",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")


if __name__ == "__main__":
    sys.exit(main())
