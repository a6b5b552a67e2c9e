"""``python -m sandbox [contacts] [seed] [plan]``: serve both simulators and print their URLs and a config."""

from __future__ import annotations

import sys

from sandbox import run_sandbox_forever


def main(argv: list[str] | None = None) -> int:
    """Parse the few positional arguments and serve until Ctrl-C (exit 2 on bad usage)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        contacts = int(args[0]) if args else 2000
        seed = int(args[1]) if len(args) > 1 else 7
    except ValueError:
        print("usage: python -m sandbox [contacts] [seed] [plan]  (contacts and seed are integers)", file=sys.stderr)
        return 2
    plan = args[2] if len(args) > 2 else "unlimited"
    try:
        return run_sandbox_forever(contacts=contacts, seed=seed, hubspot_plan=plan)
    except ValueError as exc:  # unknown plan, contacts < 1
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
