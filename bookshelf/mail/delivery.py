"""Sending the outbox: `deliver_due` sends the mails that are due, and a thread of each serving
process calls it as soon as a transaction that wrote mail has committed, then every
MAIL_RETRY_INTERVAL seconds for those that failed. `bookshelf send-mail` calls it too (cron).

Each mail is claimed before it is sent: a conditional UPDATE moves its next_attempt_at past the
time a send can take, and commits. Two senders (two processes, or a process and the command)
therefore never send one mail at once. A sent mail's row is deleted (the links in it carry
tokens); a failed one is tried again after MAIL_RETRY_INTERVAL, doubled after each failure up to
MAIL_RETRY_MAX_INTERVAL. A sender that dies mid-send leaves its claim to expire: the mail is sent
again then (at least once, never lost).

The log names a mail by its id and its recipient's domain, never the address.
"""

import logging
import smtplib
import threading
import weakref
from datetime import timedelta

from flask import Flask, current_app, has_app_context
from sqlalchemy import delete, event, func, select, update
from sqlalchemy.orm import Session

from ..extensions import db
from ..models import OutboxMail
from ..models.base import utcnow
from . import smtp

log = logging.getLogger("bookshelf.mail")

BATCH = 100
# A claim lasts this many SMTP_TIMEOUTs: the connection, TLS, the login and the mail's commands
# each wait at most one, and far fewer take that long.
CLAIM_TIMEOUTS = 12
ERROR_LENGTH = 500
# The mail's own fault: no valid mail can be made of it, or the server refused its sender,
# recipient or content and is still there for the next mail. Any other error ends the batch
# (the server is down, or refuses us).
MAIL_ERRORS = (
    ValueError,
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPSenderRefused,
    smtplib.SMTPDataError,
)
_WROTE_MAIL = "bookshelf_wrote_mail"
_EXTENSION = "bookshelf.mail.delivery"
_starting = threading.Lock()


def deliver_due(limit: int = BATCH) -> tuple[int, int]:
    """Send up to `limit` due mails, oldest due first, over one connection: (sent, failed).
    Stops at the first error of the connection. Without SMTP_URL, sends nothing."""
    config = current_app.config
    if not config["SMTP_URL"]:
        return 0, 0
    server = smtp.server(config)
    due = db.session.execute(
        select(OutboxMail.id, OutboxMail.next_attempt_at)
        .where(OutboxMail.next_attempt_at <= utcnow())
        .order_by(OutboxMail.next_attempt_at, OutboxMail.id)
        .limit(limit)
    ).all()
    db.session.rollback()
    sent = failed = 0
    connection = None
    try:
        for mail_id, seen in due:
            mail, claim = _claim(mail_id, seen, server.timeout * CLAIM_TIMEOUTS)
            if mail is None:
                continue  # another sender has it
            try:
                email = smtp.message(
                    config["MAIL_FROM"],
                    mail.recipient,
                    mail.subject,
                    mail.text_body,
                    mail.html_body,
                )
                if connection is None:
                    connection = smtp.connect(server)
                connection.send_message(email)
            except (OSError, smtplib.SMTPException, ValueError) as exc:
                failed += 1
                _failed(mail, claim, exc)
                if not isinstance(exc, MAIL_ERRORS):
                    break
            else:
                sent += 1
                _sent(mail, claim)
    finally:
        if connection is not None:
            _quit(connection)
    return sent, failed


def waiting() -> int:
    """Mails in the outbox, due or not."""
    return db.session.scalar(select(func.count()).select_from(OutboxMail))


def _claim(mail_id: int, seen, seconds: float) -> tuple[OutboxMail | None, object]:
    """The mail, if this sender now owns it until the claim's time (committed), else None."""
    claim = utcnow() + timedelta(seconds=seconds)
    won = db.session.execute(
        update(OutboxMail)
        .where(OutboxMail.id == mail_id, OutboxMail.next_attempt_at == seen)
        .values(next_attempt_at=claim)
        .execution_options(synchronize_session=False)
    ).rowcount
    mail = db.session.get(OutboxMail, mail_id) if won else None
    if mail is not None:
        db.session.expunge(mail)  # read now, used after the commit
    db.session.commit()
    return mail, claim


def _sent(mail: OutboxMail, claim) -> None:
    deleted = db.session.execute(
        delete(OutboxMail).where(OutboxMail.id == mail.id, OutboxMail.next_attempt_at == claim)
    ).rowcount
    db.session.commit()
    log.info(
        "mail sent",
        extra={"mail_id": mail.id, "recipient_domain": _domain(mail), "attempts": mail.attempts},
    )
    if not deleted:
        log.warning("mail claim expired before it was sent", extra={"mail_id": mail.id})


def _failed(mail: OutboxMail, claim, exc: Exception) -> None:
    attempts = mail.attempts + 1
    config = current_app.config
    delay = min(
        config["MAIL_RETRY_INTERVAL"] * 2 ** (attempts - 1), config["MAIL_RETRY_MAX_INTERVAL"]
    )
    error = f"{type(exc).__name__}: {exc}"[:ERROR_LENGTH]
    db.session.execute(
        update(OutboxMail)
        .where(OutboxMail.id == mail.id, OutboxMail.next_attempt_at == claim)
        .values(
            attempts=attempts,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
            last_error=error,
        )
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    log.warning(
        "mail not sent",
        extra={
            "mail_id": mail.id,
            "recipient_domain": _domain(mail),
            "attempts": attempts,
            "retry_in_s": delay,
            "error": error.replace(mail.recipient, f"…@{_domain(mail)}"),  # no address
        },
    )


def _domain(mail: OutboxMail) -> str:
    return mail.recipient.rpartition("@")[2]


def _quit(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except (OSError, smtplib.SMTPException):
        connection.close()


# After the commit, in the serving process


class Deliverer:
    """One daemon thread per app: runs deliver_due when woken, and every MAIL_RETRY_INTERVAL.
    It holds the app weakly and ends once the app is gone (tests build many apps)."""

    def __init__(self, app: Flask):
        self._app = weakref.ref(app)
        self._interval = app.config["MAIL_RETRY_INTERVAL"]
        self._wake = threading.Event()
        self._stopped = False
        self.thread = threading.Thread(target=self._run, name="bookshelf-mail", daemon=True)
        self.thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            app = self._app()
            if app is None or self._stopped:
                return
            self._deliver(app)
            del app

    @staticmethod
    def _deliver(app: Flask) -> None:
        try:
            with app.app_context():
                while sum(deliver_due()) == BATCH:
                    pass  # a full batch: more may be due
        except Exception:
            log.exception("mail delivery failed")


def wake_deliverer(app: Flask) -> None:
    """Start the app's delivery thread if it has none, and have it send what is due now."""
    deliverer = app.extensions.get(_EXTENSION)
    if deliverer is None:
        with _starting:
            deliverer = app.extensions.get(_EXTENSION)
            if deliverer is None:
                deliverer = app.extensions[_EXTENSION] = Deliverer(app)
    deliverer.wake()


def stop_deliverer(app: Flask) -> None:
    """End the app's delivery thread, if it has one (it finishes the send under way)."""
    deliverer = app.extensions.pop(_EXTENSION, None)
    if deliverer is not None:
        deliverer.stop()
        deliverer.thread.join(timeout=30)


@event.listens_for(Session, "before_flush")
def _note_mail(session, flush_context, instances) -> None:
    if any(isinstance(obj, OutboxMail) for obj in session.new):
        session.info[_WROTE_MAIL] = True


@event.listens_for(Session, "after_commit")
def _deliver_after_commit(session) -> None:
    if session.info.pop(_WROTE_MAIL, False) and has_app_context():
        app = current_app._get_current_object()
        if app.config["SMTP_URL"]:
            wake_deliverer(app)


@event.listens_for(Session, "after_rollback")
def _forget_mail(session) -> None:
    session.info.pop(_WROTE_MAIL, None)
