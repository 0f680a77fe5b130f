"""The `netdiag` command line (a contract: see DESIGN.md "The command line").

Exit codes: 0 nothing at warning or worse, 1 warnings, 2 errors, 64 usage errors (so 1 and 2
always mean "findings"), 70 an internal failure that was reported without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import NoReturn, Sequence

from agent import __version__
from agent.ports import AGENT_PORT

EXIT_USAGE = 64
EXIT_SOFTWARE = 70


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; our 2 means "errors found", so use 64 (EX_USAGE)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def parse_peer(text: str) -> tuple[str, str]:
    """`node2=192.168.77.12` -> ("node2", "192.168.77.12"); a bare IP names itself."""
    import ipaddress

    name, sep, ip = text.partition("=")
    if not sep:
        name, ip = text, text
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=IP, got {text!r}") from None
    if not name:
        raise argparse.ArgumentTypeError(f"empty peer name in {text!r}")
    return name, ip


def default_node_name() -> str:
    import socket

    return os.environ.get("NODE_NAME") or socket.gethostname()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="netdiag",
        description="Kubernetes node network diagnostics: node checks, VXLAN probes between "
                    "nodes, and a collector that names the root cause across nodes.",
        epilog="Exit codes: 0 ok, 1 warnings found, 2 errors found, 64 usage error.")
    parser.add_argument("--version", action="version", version=f"netdiag {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    check = sub.add_parser(
        "check", help="run every node check here once and print a report",
        description="Run every node check on this node once (and, with --peer, probe those "
                    "peers over VXLAN), print a report worst first, exit 0/1/2.")
    check.add_argument("--json", action="store_true", help="print the NodeReport as JSON")
    check.add_argument("--host-root", default="/", metavar="DIR",
                       help="read the host's files (/etc, /var/lib/kubelet, /opt/cni) under DIR,"
                            " e.g. /host in `kubectl debug node/... --profile=sysadmin`")
    check.add_argument("--peer", action="append", type=parse_peer, default=[],
                       metavar="NAME=IP", help="probe this peer's underlay IP (repeatable)")
    check.add_argument("--node-name", default=None,
                       help="this node's name (default: $NODE_NAME, then the hostname)")
    check.add_argument("--only", action="append", default=[], metavar="CHECK",
                       help="run only this check (repeatable; see --list)")
    check.add_argument("--skip", action="append", default=[], metavar="CHECK",
                       help="skip this check (repeatable)")
    check.add_argument("--list", action="store_true", help="list the checks and their ids")
    check.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                       help="colour the severities (default: when stdout is a terminal)")
    # For tests and recorded trees (like node_exporter's --path.procfs); hidden from --help.
    check.add_argument("--proc-root", default="/proc", help=argparse.SUPPRESS)
    check.add_argument("--sys-root", default="/sys", help=argparse.SUPPRESS)

    agent = sub.add_parser(
        "agent", help="the DaemonSet process: check, probe, report forever",
        description="Every --interval: run the node checks, probe a rotating sample of peers "
                    "over VXLAN, post the NodeReport to the collector (retrying with backoff "
                    "while it is down; the newest report is kept). The collector's answer "
                    "carries the peer list.")
    agent.add_argument("--collector", required=True, metavar="URL",
                       help="the collector's base URL, e.g. http://netdiag-collector:8080")
    agent.add_argument("--node-name", default=None,
                       help="this node's name (default: $NODE_NAME, then the hostname)")
    agent.add_argument("--interval", type=float, default=30.0, metavar="S",
                       help="seconds between rounds (default 30)")
    agent.add_argument("--once", action="store_true",
                       help="one round, post it, exit 0/1/2 like `check` (69: not delivered)")
    agent.add_argument("--token-file", metavar="F",
                       help="file holding the collector's bearer token (a mounted Secret)")
    # The DaemonSet mounts the host's /etc, /var/lib/kubelet, /opt/cni/bin, /run, /usr read-only
    # under /host (deploy/agent-daemonset.yaml); the checks read host files under this prefix.
    agent.add_argument("--host-root", default="/", metavar="DIR",
                       help="read the host's files under DIR (as `check --host-root`)")
    agent.add_argument("--listen", default=f"0.0.0.0:{AGENT_PORT}", metavar="HOST:PORT",
                       help="serve /healthz and /metrics here (TCP; also the tcp-control probe "
                            "target; the UDP control responder uses the same port number)")
    agent.add_argument("--proc-root", default="/proc", help=argparse.SUPPRESS)
    agent.add_argument("--sys-root", default="/sys", help=argparse.SUPPRESS)

    collector = sub.add_parser(
        "collector", help="the aggregator service",
        description="Ingest every node's report, correlate them and serve the root cause: "
                    "GET /report (text; ?format=json), /api/v1/peers, /metrics, /healthz, "
                    "/readyz; POST /api/v1/reports.")
    collector.add_argument("--listen", default="0.0.0.0:8080", metavar="HOST:PORT",
                           help="address to serve on (default 0.0.0.0:8080)")
    collector.add_argument("--db", default="netdiag.sqlite3", metavar="PATH",
                           help="SQLite state file (WAL), kept across restarts "
                                "(default ./netdiag.sqlite3)")
    collector.add_argument("--token-file", metavar="F",
                           help="require this bearer token on POST /api/v1/reports")
    collector.add_argument("--interval", type=float, default=30.0, metavar="S",
                           help="the report interval the collector tells agents (default 30)")
    collector.add_argument("--keep-rounds", type=int, default=3, metavar="N",
                           help="recent rounds kept per node for correlation (default 3; "
                                "memory grows with it)")
    collector.add_argument("--decode-workers", type=int, default=1, metavar="N",
                           help="processes that decode and validate posted reports, so the "
                                "service's own core serves HTTP and keeps state (default 1, "
                                "~10-12 MB each; 0: decode in the service process)")

    analyze = sub.add_parser(
        "analyze", help="offline triage of pasted command output",
        description="Recognise pasted output (iptables-save, ipvsadm -Ln [--stats], "
                    "conntrack -S, ip -d link show, bridge fdb show, a CNI config) and print "
                    "the same findings a node check would. Tolerates a shell prompt line, "
                    "surrounding text, CRLF and cut output. Exit 0/1/2 like `check`.")
    analyze.add_argument("--json", action="store_true",
                         help='print {"findings": [...]} instead of text')
    analyze.add_argument("files", nargs="+", metavar="FILE", help="a file, or - for stdin")
    return parser


def _wants_color(choice: str) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


def cmd_check(args: argparse.Namespace) -> int:
    from agent.checks import ALL_CHECKS
    from agent.checks.base import validate_registry
    from agent.host import Host
    from agent.node import build_node_report, check_node, now
    from agent.render import exit_code_for, render_node_report

    validate_registry(ALL_CHECKS)
    names = {c.SPEC.name for c in ALL_CHECKS}
    if args.list:
        for c in ALL_CHECKS:
            print(f"{c.SPEC.name:<16} {', '.join(f.id for f in c.SPEC.findings)}")
        return 0
    unknown = sorted(set(args.only + args.skip) - names)
    if unknown:
        raise UsageError(f"unknown check(s): {', '.join(unknown)} (see `netdiag check --list`)")
    if not os.path.isdir(args.host_root):
        raise UsageError(f"--host-root {args.host_root}: not a directory")
    node_name = args.node_name or default_node_name()
    with Host(root=args.host_root, proc=args.proc_root, sys=args.sys_root) as host:
        info, outcomes = check_node(host, node_name, host_root=args.host_root,
                                    only=frozenset(args.only), skip=frozenset(args.skip))
        probes, seen = (), ()
        if args.peer:
            probes, seen = _probe_peers(host, node_name, outcomes, args.peer)
    report = build_node_report(info, outcomes, collected_at=now(), probes=probes, seen=seen)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=False))
    else:
        sys.stdout.write(render_node_report(report, color=_wants_color(args.color)))
    return exit_code_for(report.findings)


def _probe_peers(host, node_name, outcomes, peers):  # type: ignore[no-untyped-def]
    """One-shot probe round: `agent.probes.oneshot.probe_peers` owns it."""
    try:
        from agent.probes.oneshot import probe_peers
    except ModuleNotFoundError as exc:
        if exc.name != "agent.probes.oneshot":
            raise
        print("note: peer probes are not implemented yet; ignoring --peer", file=sys.stderr)
        return (), ()
    return probe_peers(host, node_name, outcomes, peers)


# Each subcommand's handler lives beside its code and is imported only when used, so
# `netdiag check` never pays for aiohttp or scapy.
HANDLER_MODULES = {
    "agent": ("agent.daemon", "cmd_agent"),
    "collector": ("collector.main", "cmd_collector"),
    "analyze": ("agent.analyze", "cmd_analyze"),
}


def _load_handler(command: str):  # type: ignore[no-untyped-def]
    if command == "check":
        return cmd_check
    module_name, attr = HANDLER_MODULES[command]
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return None
    return getattr(module, attr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    handler = _load_handler(args.command)
    if handler is None:
        print(f"netdiag {args.command}: not implemented yet", file=sys.stderr)
        return EXIT_SOFTWARE
    try:
        return handler(args)
    except UsageError as exc:
        print(f"netdiag {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - a clear line, never a traceback
        print(f"netdiag {args.command}: internal error: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        if os.environ.get("NETDIAG_DEBUG"):
            raise
        return EXIT_SOFTWARE


if __name__ == "__main__":
    # Under `python -m agent.cli` this module is __main__, and handlers raise agent.cli's
    # UsageError: run agent.cli's main so there is one UsageError class (exit 64, not 70).
    from agent.cli import main as _main

    sys.exit(_main())
