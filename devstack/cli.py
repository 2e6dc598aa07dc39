"""``routing-dev``: the local control plane from a shell (DESIGN §9).

``up`` prints only the path of ``env.sh`` on stdout, so ``. "$(routing-dev up)"`` works;
progress and errors go to stderr.

A second control plane beside a first stack, on the first one's emulators (two clusters sharing
one Firestore collection):

    routing-dev up --state-dir .routing-dev
    routing-dev up --state-dir .routing-dev-b --share-emulators-with .routing-dev
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from devstack._errors import StackError
from devstack._node.images import DEFAULT_NODE_IMAGE, import_node_images
from devstack.stack import COMPONENTS, LocalStack

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="routing-dev",
        description=__doc__.splitlines()[0],
        epilog="A second control plane (its own etcd + kube-apiserver) sharing a first stack's "
        "Firestore, Redis and GCS emulators, as two clusters sharing one Firestore collection: "
        "routing-dev up --state-dir DIR2 --share-emulators-with DIR1",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="state directory (default: $ROUTING_DEV_STATE_DIR or ./.routing-dev)",
    )
    only = argparse.ArgumentParser(add_help=False)
    only.add_argument(
        "--only",
        default=None,
        help=f"comma-separated subset of: {', '.join(COMPONENTS)} (default: all)",
    )
    up = sub.add_parser("up", parents=[state, only], help="start or reuse the local stack")
    up.add_argument("--project", default=None, help="GOOGLE_CLOUD_PROJECT for the emulators")
    up.add_argument(
        "--share-emulators-with",
        type=Path,
        default=None,
        metavar="DIR",
        help="run only etcd + kube-apiserver here, and use the emulators of the stack in DIR "
        "(started or reused there): a second cluster on the same Firestore; remembered in this "
        "state directory, so later `up`/`down` need not repeat it. `down` here stops only this "
        "control plane",
    )
    up.add_argument(
        "--node",
        action="store_true",
        help="also run a real node (containerd, kubelet, kube-controller-manager, kube-scheduler)",
    )
    up.add_argument(
        "--node-image",
        action="append",
        default=None,
        metavar="REF",
        help=f"podman image to import into the node (repeatable; default: {DEFAULT_NODE_IMAGE} "
        "when podman has it)",
    )
    down = sub.add_parser("down", parents=[state, only], help="stop what `up` started")
    down.add_argument("--purge", action="store_true", help="also delete the state directory")
    sub.add_parser("status", parents=[state], help="list running components")
    sub.add_parser(
        "demo",
        parents=[state],
        help="stack + operator + engines app + examples/, narrated; stops everything at the end",
    )
    return parser


def _components(only: str | None) -> list[str] | None:
    return [c.strip() for c in only.split(",") if c.strip()] if only else None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from devstack.demo import run_demo

        return run_demo(args.state_dir)
    try:
        stack = LocalStack(
            args.state_dir,
            project=getattr(args, "project", None),
            emulators_from=getattr(args, "share_emulators_with", None),
        )
        if args.command == "up":
            started = time.monotonic()
            statuses = stack.up(_components(args.only), node=args.node)
            if args.node or args.node_image:
                for ref in import_node_images(stack.state_dir, args.node_image):
                    print(f"node: imported image {ref}", file=sys.stderr)
            for status in statuses.values():
                verb = "reused" if status.reused else "started"
                print(
                    f"{status.name}: {verb} (pid {status.pid}, {status.seconds:.1f}s)",
                    file=sys.stderr,
                )
            print(f"stack ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
            print(stack.env_file)
        elif args.command == "down":
            stack.down(_components(args.only))
            if args.purge and args.only is None:
                shutil.rmtree(stack.state_dir, ignore_errors=True)
            print(f"stopped ({stack.state_dir})", file=sys.stderr)
        else:
            for name, pid in stack.pids().items():
                print(f"{name}\t{pid}\t{stack.log_path(name)}")
            if stack.shared is not None:
                print(f"(emulators shared with {stack.shared.state_dir})")
    except StackError as exc:
        print(f"routing-dev {args.command}: {exc}", file=sys.stderr)
        if args.command == "up":
            print(
                "anything it started is still running: `routing-dev up` again reuses it, "
                f"`routing-dev down --state-dir {args.state_dir}` stops it",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
