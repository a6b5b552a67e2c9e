"""The consent ledger, purposes and policy, the preference-center webhook, and opt-out propagation.

    consent.policy     the pure rules: current state, what a basis allows, destinations per purpose
    consent.ledger     Ledger: append-only, hash-chained per tenant; decisions(), verify(), erase()
    consent.outbox     Outbox and drain(): durable suppression actions, retried with backoff
    consent.propagate  record_and_enqueue(), erase_and_enqueue(), record_vendor_signals(): one transaction each
    consent.webhook    create_app(): the ASGI app for Mailchimp, HubSpot and custom preference centers
    consent.webhook_events  what each vendor's webhook body means (parsing, validation; no I/O)
    consent.records    the plain records the ledger takes and returns
    consent.schema     the tables (the Alembic revision 0002 creates them)

Nothing here imports ``sync``; the ``segsync consent`` commands live in ``sync.consent_cmds``.
"""
