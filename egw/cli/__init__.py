"""The `egw` command: run the gateway (serve, migrate, dev) or use one (submit, rerun,
status, logs, cancel, tasks, events, watch).

`parser` builds the command line, `server` runs serve and migrate, `commands` and
`streams` are the client commands, `output` how they print, `codes` their exit codes
(the README's table). Every error is one line on stderr naming what to do.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from egw.cli import codes
from egw.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    from egw.cli.parser import build

    parser = build()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the command's own parser: its usage error and exit code
        command = parser.commands.get(getattr(args, "command", None) or "", parser)
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        result: int = args.run(args)
        sys.stdout.flush()
        return result
    except ConfigError as exc:
        print(f"egw: {exc.message}", file=sys.stderr)
        return 2
    except codes.CLIError as exc:
        print(f"egw: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return codes.INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`egw logs -f ID | head -2`): stop quietly, as Unix tools do;
        # what is still buffered for stdout goes nowhere instead of to a second error at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return codes.BROKEN_PIPE
