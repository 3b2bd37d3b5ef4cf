"""Webhooks: every audit entry is an event, delivered at least once, signed, in order, by the
store's one driver (docs/spec.md, "Webhooks"; docs/adr/0028-webhooks-over-the-audit-log.md).

- :mod:`.events`: which event an audit entry is, and which events a webhook may ask for;
- :mod:`.payloads`: the JSON and Slack bodies and the signature headers;
- :mod:`.delivery`: the delivery loop the lease holder runs, and the daily stale check;
- :mod:`.service`: the admin operations (add, list, remove, test, deliveries).
"""
