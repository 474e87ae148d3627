"""``wirehead server``: run a local MongoDB-compatible server in the foreground; show or stop the shared one."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time

from .. import server as srv
from ..config import redact_uri
from ._common import UsageError, formatter, stop_on_signals

HELP = "run a local server in the foreground, or show/stop the shared one"
DESCRIPTION = """\
Run a local MongoDB-compatible server (mongod when on PATH, else SecantusDB) on 127.0.0.1 in
the foreground and print its URI; Ctrl-C or SIGTERM stops it cleanly (exit 0; a second signal
while it stops is ignored: the stop kills the server after 10 s).  Point configs
at it with MONGO_URI, or export WIREHEAD_MONGO_URI.  The server requires authentication: the URI
printed holds its random credential (kept in DIR/credential.json, mode 0600), so other users of
the machine cannot use it.

`server status` shows the shared per-user server that host-less configs start on first use
(recorded in $WIREHEAD_HOME/server.json, default ~/.wirehead; exit code 3 when none runs);
`server stop` stops it.

examples:
  wirehead server --dir /scratch/wirehead-db      # data kept in that directory
  wirehead server status --json
  wirehead server stop"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help=HELP, description=DESCRIPTION, formatter_class=formatter)
    p.add_argument("action", nargs="?", choices=("run", "status", "stop"), default="run",
                   help="run (default): a server in the foreground; status / stop: the shared server")
    p.add_argument("--dir", metavar="DIR", help="data directory (kept); default: a temporary one, removed at exit")
    p.add_argument("--port", type=int, help="port to listen on (default: a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1); on a cluster, the node's private address "
                        "(examples/slurm/mongodb.sbatch), always with --auth")
    p.add_argument("--auth", action=argparse.BooleanOptionalAction, default=True,
                   help="require authentication (default; the URI printed holds the server's own credential). "
                        "--no-auth serves without access control, on 127.0.0.1 only: for creating your own "
                        "users first (examples/slurm/mongodb.sbatch)")
    p.add_argument("--engine", choices=("auto", "mongod", "secantus"), default="auto", help="server to run")
    p.add_argument("--json", action="store_true", help="status: print the record as JSON")
    p.set_defaults(run=run, log_level=logging.INFO)


def run(args: argparse.Namespace) -> int:
    if args.action == "status":
        record = srv.shared_record()
        if record is not None:  # the credential stays in the 0600 record: the terminal gets ***
            record = {**record, "uri": redact_uri(record.get("uri"))}
        if args.json:
            print(json.dumps(record))
        elif record is None:
            print(f"no shared local server is running (record: {srv.wirehead_home() / 'server.json'})")
        else:
            age = time.time() - float(record.get("started", time.time()))
            print(f"shared local server: {record['uri']}  pid {record['pid']}  engine {record.get('engine')}  "
                  f"data {record.get('dbpath')}  up {age:.0f} s")
        return 0 if record is not None or args.json else 3
    if args.action == "stop":
        record = srv.stop_shared()
        if record is None:
            print("no shared local server was running")
        else:
            print(f"stopped the shared local server {redact_uri(record.get('uri'))} (pid {record.get('pid')})")
        return 0
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UsageError(f"--port should be in 1..65535, got {args.port}")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.auth:
        raise UsageError(f"--host {args.host} lets other machines reach the server: drop --no-auth (create your "
                         f"own users first on a run bound to 127.0.0.1), or keep the default --host 127.0.0.1")
    server = srv.LocalMongo(args.dir, port=args.port, engine=args.engine, host=args.host, auth=args.auth)
    with stop_on_signals(lambda: None) as stopped:
        try:
            server.start()
            print(server.uri, flush=True)
            print(f"{server.engine} running (pid {server.pid}, data in {server.dbpath}); "
                  f"Ctrl-C stops it. Use: export WIREHEAD_MONGO_URI={server.uri}", file=sys.stderr, flush=True)
            while not stopped.is_set():
                if not server.running:
                    print(f"wirehead server: {server.engine} exited on its own (code "
                          f"{server.process.returncode if server.process else None}); log {server.log_path}",
                          file=sys.stderr)
                    return 1
                stopped.wait(0.5)
        finally:
            _stop_undisturbed(server)
    print("server stopped", file=sys.stderr)
    return 0


def _stop_undisturbed(server: srv.LocalMongo, timeout: float = 10.0) -> None:
    """Stop ``server`` while further SIGINT/SIGTERM only say so: the stop is bounded (SIGKILL after ``timeout``),
    and a second signal (scancel's SIGTERM, then a job script's own ``kill``; a second Ctrl-C) that cut it short
    would leave the server running without its owner."""

    def again(signum: int, frame: object) -> None:
        # os.write: a signal handler must not re-enter the buffered sys.stderr
        os.write(2, f"wirehead server: already stopping the server (killed if not stopped within "
                    f"{timeout:.0f} s)\n".encode())

    old = {s: signal.signal(s, again) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.stop(timeout)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
