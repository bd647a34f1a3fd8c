"""`python -m nightshift_jobs <name> [--param k=v ...] [--dry-run]`: the container entrypoint."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from nightshift_jobs.runtime import execute


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad flags; the contract says 64, with the reason in the result."""

    def error(self, message: str) -> NoReturn:
        raise _ArgError(message)


class _ArgError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m nightshift_jobs", description="Run one nightshift job.")
    parser.add_argument("name", help="job name, e.g. ttl-cleanup")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
    args_list = sys.argv[1:] if argv is None else argv
    try:
        args = parser.parse_args(args_list)
    except _ArgError as exc:
        name = next((a for a in args_list if not a.startswith("-")), "unknown")
        return execute(name, usage_error=f"{exc}; usage: {parser.format_usage().strip()}")
    overrides: dict[str, Any] = {}
    try:
        from nightshift_jobs.params import parse_override

        for item in args.param:
            key, value = parse_override(item)
            overrides[key] = value
    except Exception as exc:
        return execute(args.name, usage_error=str(exc))
    return execute(args.name, overrides, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
