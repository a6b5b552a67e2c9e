"""The consent ledger, purposes and policy, the preference-center webhook, and opt-out propagation.

    consent.policy     the pure rules: current state, what a basis allows, destinations per purpose
    consent.ledger     Ledger: append-only, HMAC-chained per tenant; decisions(), verify(), checkpoint(), erase()
    consent.chain      the keyed chain: row hashes, appends, the walk that verify() does
    consent.checkpoint signed chain heads kept outside the database; the check against one
    consent.integrity  outbox row MACs (a status edited by hand is found by verify())
    consent.erasure    erasure with its chained proof; scrubbing copies (outbox errors, run reports)
    consent.keys       KeyFile: the per-tenant pseudonym key, generated at first use, outside the database
    consent.outbox     Outbox and drain(): durable suppression actions, retried with backoff
    consent.propagate  record_and_enqueue(), erase_and_enqueue(): one transaction each
    consent.webhook    create_app(): the ASGI app for vendor webhooks and custom preference centers
    consent.webhook_events  what each vendor's webhook body means (parsing, validation; no I/O)
    consent.signals    ConsentSignal: the one consent-fact type (what the ledger records, what a pull sees)
    consent.records    the plain records the ledger returns
    consent.schema     the tables (Alembic revisions 0002 and 0003 create them)

Nothing here imports ``sync``; the ``segsync consent`` commands live in ``sync.consent_cmds``.
"""
