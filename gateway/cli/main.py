"""The `tlsgate` command's entry point (API.md "Command line")."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from gateway.cli.parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`tlsgate get ... | head`): stop quietly, as other Unix tools
        # do, and keep the interpreter's final flush from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13  # as if ended by SIGPIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
