"""The `egw` command line: its parser, one line per usage error."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn

from egw import __version__
from egw.cli import codes

DEFAULT_URL = "http://127.0.0.1:8080"

_EXAMPLES = """\
examples:
  egw serve --config config.yaml            run the gateway
  ID=$(egw submit -q -- sleep 30)           submit; keep its id
  egw submit --follow -- make test          print the output live; exit with the task's code
  egw status $ID --wait                     wait until it ends
  egw logs $ID -f                           follow its output
  egw events $ID -f                         follow its status changes
  egw cancel $ID
  egw rerun $ID --follow                    run it again
  egw tasks --status failed --label team=ci --all

exit codes of the client commands: 0 success; 1-119 a failed task's own code; 120 usage;
121 the gateway refused; 122 gateway unreachable or failing; 123 task failed (no code of its
own in 1-119); 124 timed out; 125 cancelled; 126 cancel failed (egw cancel);
130 interrupted; 141 output closed.
"""


#: each command's --help ends with these
EXAMPLES = {
    "serve": ["egw serve --config config.yaml", "egw serve --host 0.0.0.0 --port 9000"],
    "migrate": [
        "egw migrate --config config.yaml",
        "egw migrate --from sqlite:///data/egw.db --to postgresql://egw@db/egw",
    ],
    "submit": [
        "ID=$(egw submit -q -- sleep 30)",
        "egw submit --follow -- make test",
        "egw submit --json --name nightly --label team=ops --timeout 3600 -- ./backup.sh",
        "egw submit --provider nomad --file job.json",
    ],
    "rerun": ["egw rerun $ID", "egw rerun $ID --follow"],
    "status": ["egw status $ID", "egw status $ID --wait --json"],
    "logs": [
        "egw logs $ID",
        "egw logs $ID -f --stream stderr",
        "egw logs $ID --tail 20 -f --timestamps",
    ],
    "cancel": ["egw cancel $ID", "egw cancel $ID --force", "egw cancel $ID --wait"],
    "tasks": [
        "egw tasks --status running --status queued",
        "egw tasks --label team=ci --name nightly --all --json",
    ],
    "events": ["egw events $ID", "egw events $ID -f --json"],
    "watch": ["egw watch", "egw watch --provider nomad --after 0"],
    "circuits": ["egw circuits", "egw circuits --events --json"],
    "audit": [
        "egw audit --since 1d --type cancel_requested",
        "egw audit --actor deployer --all --json   # other actors' events need admin",
    ],
    "token": [
        "egw token create alice --scopes tasks:read tasks:write   # prints it once",
        "egw token list",
        "egw token revoke alice",
    ],
    "completion": ['eval "$(egw completion bash)"   # in ~/.bashrc'],
    "dev": [
        "egw dev",
        "egw dev --time-scale 5   # simulated tasks take 25 times as long as by default",
    ],
}


def add_examples(command: argparse.ArgumentParser, name: str) -> None:
    command.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])


class Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr naming what to do, exit code ``usage_code``
    (2 for serve, migrate and dev, as the README's "Operating" says; 120 for the
    client commands, whose low codes belong to the tasks)."""

    usage_code = 2
    #: the subcommands' parsers, by name (on the top-level parser)
    commands: dict[str, Parser]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)  # examples
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(self.usage_code)


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: give 0 to 65535")
    return value


def build() -> Parser:
    from egw.cli import commands, server, streams

    p = Parser(
        prog="egw",
        description="egw, an execution gateway.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"egw {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="config file (default: the embedded defaults)")
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=port, help="listen port (overrides server.port)")
    serve.set_defaults(run=server.serve_command)

    migrate = sub.add_parser("migrate", help="apply database migrations, or copy a database")
    migrate.add_argument("--config", help="config file (default: the embedded defaults)")
    migrate.add_argument(
        "--from", dest="source", metavar="URL", help="copy this SQLite database (sqlite:///path)"
    )
    migrate.add_argument(
        "--to", dest="target", metavar="URL", help="into this new PostgreSQL database"
    )
    migrate.set_defaults(run=server.migrate_command)

    def client(name: str, help: str, run: Any) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        assert isinstance(c, Parser)
        c.usage_code = codes.USAGE
        env = os.environ.get
        c.add_argument("--url", default=env("EGW_URL", DEFAULT_URL), help="gateway URL ($EGW_URL)")
        c.add_argument("--token", default=env("EGW_TOKEN"), help="bearer token ($EGW_TOKEN)")
        c.add_argument(
            "--cacert", default=env("EGW_CACERT"), help="CA file for HTTPS ($EGW_CACERT)"
        )
        c.add_argument("--json", action="store_true", help="print JSON for scripts")
        c.set_defaults(run=commands.client(run))
        return c

    s = client("submit", "submit a task", commands.submit)
    s.add_argument("--provider", default="local", help="local, nomad, github_actions, cloud_run")
    s.add_argument(
        "--namespace",
        default=os.environ.get("EGW_NAMESPACE"),
        help="the task's namespace ($EGW_NAMESPACE; unset: the token's only one, else default)",
    )
    s.add_argument("--file", help="a JSON file: the whole body, or just its task object")
    s.add_argument("--task", help="the task object as JSON")
    s.add_argument("--name")
    s.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--timeout", type=float, metavar="SECONDS", help="more than 0")
    s.add_argument("--idempotency-key")
    _follow_options(s)
    s.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND ARGS... (local runner)")

    r = client(
        "rerun", "submit a task again: same provider, spec, name, labels, timeout", commands.rerun
    )
    r.add_argument("id")
    _follow_options(r)

    st = client("status", "show a task", commands.status)
    st.add_argument("id")
    st.add_argument("--wait", action="store_true", help="wait until it ends; exit with its outcome")

    lg = client("logs", "print a task's output", commands.logs)
    lg.add_argument("id")
    lg.add_argument(
        "-f", "--follow", action="store_true", help="follow to the end; exit with its outcome"
    )
    lg.add_argument("--stream", choices=["stdout", "stderr"])
    lg.add_argument("--tail", type=int, metavar="N", help="only the last N lines (then -f goes on)")
    lg.add_argument(
        "--since",
        metavar="DURATION|TIME",
        help="output since 5m ago or a time: exact only before the task was submitted "
        "(all) or after it ended (none), since egw keeps no time per piece of output",
    )
    lg.add_argument(
        "--timestamps",
        action="store_true",
        help="with -f: each line prefixed with the time it arrived ('-' if stored before)",
    )

    cn = client("cancel", "cancel a task", commands.cancel)
    cn.add_argument("id")
    cn.add_argument("--force", action="store_true")
    cn.add_argument(
        "--wait",
        action="store_true",
        help="wait until upstream confirms (exit 0) or the cancel fails (exit 126)",
    )

    ts = client("tasks", "list tasks, newest first", commands.tasks)
    ts.add_argument("--status", action="append", default=[], help="repeatable")
    ts.add_argument("--provider")
    ts.add_argument("--namespace", default=os.environ.get("EGW_NAMESPACE"), help="($EGW_NAMESPACE)")
    ts.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    ts.add_argument("--name", help="only tasks of this name")
    ts.add_argument("--stuck", action="store_true", help="only tasks the watchdog flagged stuck")
    ts.add_argument("--limit", type=int, default=20, help="rows per page (1-500)")
    ts.add_argument("--cursor", help="the page after this one (as printed after 'more:')")
    ts.add_argument("--all", action="store_true", help="every page")

    ev = client("events", "print a task's events, one line each", streams.events)
    ev.add_argument("id")
    ev.add_argument("-f", "--follow", action="store_true", help="until the task has ended")

    from egw.cli.audit import audit_command

    au = client("audit", "who did what: past events, oldest first, filtered", audit_command)
    au.add_argument("--actor", help="only this token's events (others' need the scope admin)")
    au.add_argument("--type", action="append", default=[], help="event kind; repeatable")
    au.add_argument("--provider")
    au.add_argument("--task", dest="task_id", metavar="ID")
    au.add_argument("--since", metavar="DURATION|TIME", help="5m, 2d ago, or an ISO 8601 time")
    au.add_argument("--until", metavar="DURATION|TIME", help="as --since; events before it")
    au.add_argument("--limit", type=int, default=50, help="rows per page (1-500)")
    au.add_argument("--after", type=int, default=0, metavar="SEQ", help="events after this seq")
    au.add_argument("--all", action="store_true", help="every page, up to now")

    w = client("watch", "print every task's events as they happen (Ctrl-C stops)", streams.watch)
    w.add_argument("--provider")
    w.add_argument("--task", dest="task_id", metavar="ID")
    w.add_argument("--after", type=int, metavar="SEQ", help="replay from after this event first")

    from egw.cli.circuits import circuits

    cb = client("circuits", "show the circuit breakers toward each upstream", circuits)
    cb.add_argument("--events", action="store_true", help="and every move they made")

    from egw.cli.completion import completion_command

    cp = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description="print a shell completion script",
    )
    cp.add_argument("shell", choices=["bash", "zsh"])
    cp.set_defaults(run=completion_command)

    from egw.cli.tokens import add_token_parser

    add_token_parser(sub)

    from egw.devserver import add_dev_parser

    add_dev_parser(sub)
    p.commands = dict(sub.choices)
    for name, command in p.commands.items():
        add_examples(command, name)
    return p


def _follow_options(c: argparse.ArgumentParser) -> None:
    c.add_argument("--follow", "-f", action="store_true", help="then follow its logs to the end")
    c.add_argument(
        "--cancel-on-interrupt",
        action="store_true",
        help="with --follow: Ctrl-C cancels the task (else it keeps running)",
    )
    c.add_argument("-q", "--quiet", action="store_true", help="print only the task's id")
