"""Command line: ``python -m pysyncq {demo,list,clean}``."""

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
    sub.add_parser("list", help="list the pysyncq queues in /dev/shm")
    clean = sub.add_parser(
        "clean", help="remove queues left behind by processes that have all ended"
    )
    clean.add_argument("names", nargs="*", help="queues to remove (default: every stale one)")
    clean.add_argument("--force", action="store_true", help="remove even queues in use")
    args = parser.parse_args(argv)

    if args.command == "demo":
        if args.workers < 1 or args.duration < 0:
            parser.error("--workers must be >= 1 and --duration >= 0")
        from .demo import main as demo_main

        return demo_main(args.workers, args.duration, args.size, args.start)

    from ._lifecycle import list_queues, remove

    if args.command == "list":
        queues = list_queues()
        for name, in_use in queues:
            print(f"{name}\t{'in use' if in_use else 'stale'}")
        if not queues:
            print("no queues")
        return 0

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


if __name__ == "__main__":
    sys.exit(main())
