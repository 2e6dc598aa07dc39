"""The ``routingctl`` / ``kubectl routing`` command line: argument parsing and exit codes only.

Each subcommand lives in its own private module; this one wires arguments to them and turns
errors into exit codes, so the contract a CI job relies on is in one place:

- ``0`` clean (valid / resolved / complete / in sync);
- ``1`` problems found (invalid manifests, a kind that does not resolve, a missing matrix cell,
  drift, orphans or conflicts; an orphan ``prune`` could not delete);
- ``2`` usage or I/O error (bad flags, unreadable path, unreachable cluster or Firestore).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import TextIO

from engines.routing import CATALOG
from engines.routing.contract import API_GROUP, DEFAULT_COLLECTION

from ._manifests import ManifestIOError

__all__ = ["EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "main"]

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
ALL_KINDS = tuple(k.value for k in CATALOG)
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

EXIT_CODES = """\
exit codes:
  0  clean: no problem found
  1  problems found (see each command)
  2  usage or I/O error (bad arguments, unreadable path, unreachable cluster/Firestore)
"""

SOURCE_HELP = """\
where entries are read from (default: cluster):
  cluster      RoutingEntry objects through the current kubeconfig (--kubeconfig, --context, -n)
  firestore    the routing collection (--collection; FIRESTORE_EMULATOR_HOST and
               GOOGLE_CLOUD_PROJECT as the Google client reads them)
  dir PATH...  RoutingEntry manifests (files or directories, YAML/JSON)
  files PATH.. mounted ConfigMap directories (keys {tenant}.{project}.{kind}.json)
"""


class _UsageError(Exception):
    pass


def _prog() -> str:
    name = os.path.basename(sys.argv[0] or "routingctl")
    return "kubectl routing" if name.startswith("kubectl-routing") else "routingctl"


def _label(value: str, what: str) -> str:
    if not _LABEL.match(value):
        raise _UsageError(f"{what} {value!r} is not a DNS label (lowercase letters, digits, '-')")
    return value


def _csv_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _kinds(value: str | None) -> list[str]:
    kinds = _csv_list(value)
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown:
        raise _UsageError(
            f"unknown resource kind(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(ALL_KINDS)}"
        )
    return kinds or list(ALL_KINDS)


def _tenants(value: str | None) -> list[str]:
    return [_label(t, "tenant") for t in _csv_list(value)]


def _add_source_args(p: argparse.ArgumentParser, *, source: bool = True) -> None:
    if source:
        p.add_argument(
            "--source",
            nargs="+",
            metavar=("SOURCE", "PATH"),
            default=["cluster"],
            help="cluster | firestore | dir PATH... | files PATH... (default: cluster)",
        )
    p.add_argument("-n", "--namespace", help="cluster: only this namespace (default: all)")
    p.add_argument("--kubeconfig", help="cluster: kubeconfig file (default: $KUBECONFIG)")
    p.add_argument("--context", help="cluster: kubeconfig context (default: current)")
    p.add_argument(
        "--collection",
        default=os.environ.get("ENGINES_ROUTING_COLLECTION", DEFAULT_COLLECTION),
        help="firestore: collection (default: $ENGINES_ROUTING_COLLECTION or routing_entries)",
    )
    p.add_argument(
        "--gcp-project", help="firestore: Google Cloud project (default: $GOOGLE_CLOUD_PROJECT)"
    )
    p.add_argument("--database", help="firestore: database id (default: (default))")


def build_parser() -> argparse.ArgumentParser:
    prog = _prog()
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"Validate, explain and compare RoutingEntry routing ({API_GROUP}).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    raw = argparse.RawDescriptionHelpFormatter

    v = sub.add_parser(
        "validate",
        help="lint RoutingEntry manifests offline",
        formatter_class=raw,
        description=(
            "Check RoutingEntry manifests (files, directories, - for stdin; YAML or JSON, "
            "multi-document, kind: List) with the model the CRD is generated from. Prints every "
            "problem, one line each: FILE:LINE: FIELD.PATH: MESSAGE (document N) -- LINE is the "
            "1-based line of the offending field, N counts the documents of the file from 0. "
            "Other kinds are skipped. Duplicate objects and duplicate identities across files "
            "are problems."
        ),
        epilog="exit codes:\n"
        "  0  every RoutingEntry is valid (and complete, with --require-complete)\n"
        "  1  problems found\n  2  usage or I/O error (a path does not exist or cannot be read)\n",
    )
    v.add_argument("paths", nargs="+", metavar="PATH")
    v.add_argument(
        "--require-complete",
        action="store_true",
        help="fail when a tenant lacks a kind in --env (wildcard-tenant entries count, §3)",
    )
    v.add_argument("--env", help="environment for --require-complete")
    v.add_argument("--tenants", help="comma list of tenants for --require-complete")
    v.add_argument("--kinds", help="comma list of kinds to require (default: every catalog kind)")
    v.add_argument("--project", default="*", help="project to resolve for (default: *)")
    v.add_argument("--output", "-o", choices=("text", "json"), default="text")

    e = sub.add_parser(
        "explain",
        help="show which entry wins for one (kind, tenant, env, project) and why",
        formatter_class=raw,
        description="Walk the §3 precedence chain for one key and show the winning entry "
        "(source, revision, backend, config; secrets never shown).",
        epilog=SOURCE_HELP + "\nexit codes:\n  0  resolved\n  1  nothing resolves (ConfigMissing)\n"
        "  2  usage error or the source cannot be read\n",
    )
    e.add_argument("--env", required=True)
    e.add_argument("--tenant", required=True)
    e.add_argument("--project", default="*")
    e.add_argument("--kind", required=True, choices=ALL_KINDS, metavar="KIND")
    _add_source_args(e)
    e.add_argument("--output", "-o", choices=("text", "json"), default="text")

    m = sub.add_parser(
        "matrix",
        help="tenants x kinds completeness table for one env",
        formatter_class=raw,
        description="Resolve every kind for every tenant of --env (tenants with an entry, or "
        "--tenants) and show the winning backend; (*) marks an env-wide default, MISSING a "
        "kind that would keep a pod from being ready.",
        epilog=SOURCE_HELP + "\nexit codes:\n  0  every tenant resolves every kind\n"
        "  1  at least one cell is missing\n  2  usage error or the source cannot be read\n",
    )
    m.add_argument("--env", required=True)
    m.add_argument("--tenants", help="comma list (default: tenants with an entry in --env)")
    m.add_argument("--kinds", help="comma list (default: every catalog kind)")
    m.add_argument("--project", default="*")
    _add_source_args(m)
    m.add_argument("--output", "-o", choices=("text", "json", "csv"), default="text")
    m.add_argument("--color", choices=("auto", "always", "never"), default="auto")

    d = sub.add_parser(
        "diff",
        help="compare RoutingEntry objects with their Firestore documents and ConfigMaps",
        formatter_class=raw,
        description="For each RoutingEntry in the cluster: in-sync, drifted (which projection, "
        "which field), conflicting, invalid or paused; plus orphaned Firestore documents and "
        "ConfigMap keys whose RoutingEntry is gone.",
        epilog="exit codes:\n  0  everything in sync\n  1  drift, orphans, conflicts or invalid "
        "entries found\n  2  usage error, or the cluster/Firestore cannot be read\n",
    )
    d.add_argument("--env", help="only this environment (default: all)")
    d.add_argument(
        "--projections",
        default="firestore,configmaps",
        help="comma list of projections to compare: firestore, configmaps (default: both)",
    )
    _add_source_args(d, source=False)
    _add_cluster_id(d)
    d.add_argument("--output", "-o", choices=("text", "json"), default="text")

    pr = sub.add_parser(
        "prune",
        help="delete this cluster's orphaned Firestore documents and ConfigMap keys",
        formatter_class=raw,
        description="Delete the projections of this cluster whose RoutingEntry is gone (the "
        "operator keeps them outside env test: an entry may vanish by accident while pods "
        "still read them). Prints each thing it deletes. Never touches another cluster's "
        "documents, nor documents that record no cluster. Each deletion is conditional on the "
        "projection being unchanged since it was read.",
        epilog="exit codes:\n  0  pruned (or listed, with --dry-run)\n  1  an orphan changed "
        "while pruning and was left alone\n  2  usage error, or the cluster/Firestore cannot "
        "be read or the cluster identity determined\n",
    )
    pr.add_argument("--env", help="only this environment (default: all)")
    pr.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    _add_source_args(pr, source=False)
    _add_cluster_id(pr)
    return parser


def _add_cluster_id(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cluster-id",
        help="this cluster's identity as the operator records it in source.cluster (default: "
        "the uid of namespace kube-system, as the operator's default)",
    )


def _snapshot(args: argparse.Namespace, env: str | None) -> object:
    from ._sources import SOURCES, load_snapshot

    source = args.source
    if source[0] not in SOURCES:
        raise _UsageError(f"--source {source[0]!r}: expected one of {', '.join(SOURCES)}")
    if source[0] in ("dir", "files") and len(source) < 2:
        raise _UsageError(f"--source {source[0]} needs at least one PATH")
    if source[0] in ("cluster", "firestore") and len(source) > 1:
        raise _UsageError(f"--source {source[0]} takes no PATH (got {' '.join(source[1:])})")
    return load_snapshot(
        source,
        env=env,
        namespace=args.namespace,
        kubeconfig=args.kubeconfig,
        context=args.context,
        collection=args.collection,
        gcp_project=args.gcp_project,
        database=args.database,
    )


def _validate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ._output import dump_json
    from ._validate import check_completeness, validate_paths

    if args.require_complete:
        if not args.env or not args.tenants:
            raise _UsageError("--require-complete needs --env and --tenants")
        _label(args.env, "env")
        tenants, kinds = _tenants(args.tenants), _kinds(args.kinds)
    elif args.tenants or args.kinds:
        raise _UsageError("--tenants/--kinds apply only with --require-complete")
    report = validate_paths(args.paths)
    if not report.files:
        raise _UsageError(f"no YAML/JSON files found in {' '.join(args.paths)}")
    problems = list(report.problems)
    if args.require_complete:
        problems += check_completeness(
            report.entries, env=args.env, tenants=tenants, kinds=kinds, project=args.project
        )
    if args.output == "json":
        dump_json(
            {
                "ok": not problems,
                "files": report.files,
                "entries": report.documents,
                "valid": len(report.entries),
                "skipped": report.skipped,
                "problems": [p.as_dict() for p in problems],
            },
            out,
        )
    else:
        for p in problems:
            out.write(f"{p}\n")
        verdict = f"{len(problems)} problem(s)" if problems else "OK"
        err.write(
            f"validate: {verdict} — {report.documents} RoutingEntry document(s) in "
            f"{report.files} file(s), {report.skipped} other document(s) skipped\n"
        )
    return EXIT_PROBLEMS if problems else EXIT_OK


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.command == "validate":
        return _validate(args, out, err)
    if args.command == "explain":
        from ._explain import explain

        _label(args.env, "env")
        if args.project != "*":
            _label(args.project, "project")
        snapshot = _snapshot(args, args.env)
        return explain(
            snapshot,  # type: ignore[arg-type]
            kind=args.kind,
            tenant=_label(args.tenant, "tenant"),
            env=args.env,
            project=args.project,
            output=args.output,
            out=out,
        )
    if args.command == "matrix":
        from ._matrix import matrix

        _label(args.env, "env")
        tenants, kinds = _tenants(args.tenants), _kinds(args.kinds)
        snapshot = _snapshot(args, args.env)
        return matrix(
            snapshot,  # type: ignore[arg-type]
            env=args.env,
            tenants=tenants or None,
            kinds=kinds,
            project=args.project,
            output=args.output,
            out=out,
            color={"auto": None, "always": True, "never": False}[args.color],
        )
    if args.command == "diff":
        from ._diff import diff
        from ._sources import ClusterClient

        projections = set(_csv_list(args.projections))
        if not projections or projections - {"firestore", "configmaps"}:
            raise _UsageError("--projections: comma list of firestore, configmaps")
        if args.env:
            _label(args.env, "env")
        cluster = ClusterClient(kubeconfig=args.kubeconfig, context=args.context)
        return diff(
            cluster,
            cluster_id=cluster.cluster_identity(args.cluster_id),
            namespace=args.namespace,
            env=args.env,
            projections=projections,
            collection=args.collection,
            gcp_project=args.gcp_project,
            database=args.database,
            output=args.output,
            out=out,
        )
    if args.command == "prune":
        from ._prune import prune
        from ._sources import ClusterClient

        if args.env:
            _label(args.env, "env")
        return prune(
            ClusterClient(kubeconfig=args.kubeconfig, context=args.context),
            cluster_id=args.cluster_id,
            namespace=args.namespace,
            env=args.env,
            collection=args.collection,
            gcp_project=args.gcp_project,
            database=args.database,
            dry_run=args.dry_run,
            out=out,
            err=err,
        )
    raise _UsageError(f"unknown command {args.command}")  # pragma: no cover - argparse refuses


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one command; returns the exit code (console scripts pass it to ``sys.exit``)."""
    from ._sources import SourceError

    out, err = out or sys.stdout, err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        return _run(args, out, err)
    except _UsageError as exc:
        err.write(f"{parser.prog} {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except (ManifestIOError, SourceError) as exc:
        err.write(f"{parser.prog} {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except BrokenPipeError:  # `routingctl matrix | head`
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
