"""``python -m sandbox [contacts] [seed]``: serve both simulators and print their URLs and a config."""

from __future__ import annotations

import sys
import time

from sandbox import start_sandbox


def main(argv: list[str] | None = None) -> int:
    """Start the sandbox, print how to reach it, and wait for Ctrl-C."""
    args = sys.argv[1:] if argv is None else argv
    contacts = int(args[0]) if args else 2000
    seed = int(args[1]) if len(args) > 1 else 7
    with start_sandbox(contacts=contacts, seed=seed) as sb:
        print(f"HubSpot   {sb.hubspot_url}  (Bearer {sb.hubspot_token})")
        print(f"Mailchimp {sb.mailchimp_url}  (key {sb.mailchimp_key}, list {sb.mailchimp_list_id})")
        print("\n# segsync config:\n" + sb.config_yaml())
        print("Ctrl-C to stop.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
