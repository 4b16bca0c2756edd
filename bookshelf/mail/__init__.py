"""Outgoing mail: written to an outbox in the transaction of the change that causes it (outbox),
sent after the commit and retried (delivery), through the SMTP server of SMTP_URL (smtp)."""
