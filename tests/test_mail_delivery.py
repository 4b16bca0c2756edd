"""Outgoing mail through a real SMTP server (aiosmtpd on a free port): sent after the commit that
wrote it, never after a rollback, kept and sent later when the server is down, over STARTTLS or
TLS with a login, and sent once however many senders run at once."""

import asyncio
import email
import email.policy
import os
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from sqlalchemy import select

from bookshelf.extensions import db
from bookshelf.mail.delivery import deliver_due, stop_deliverer
from bookshelf.mail.outbox import enqueue
from bookshelf.models import OutboxMail
from bookshelf.models.base import utcnow
from tests.processes import ROOT, ServerProcess, free_port
from tests.test_cli import wait_for

USERNAME, PASSWORD = "mailer", "s3cret p@ss:word"
BOOKSHELF = Path(sys.executable).with_name("bookshelf")


class Inbox:
    """An aiosmtpd handler that keeps what it receives, and the logins it accepted."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.mails: list[email.message.EmailMessage] = []
        self.envelopes = []
        self.logins: list[tuple[bytes, bytes]] = []
        self.received = threading.Condition()
        self.refused: set[str] = set()  # recipients answered 550

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.refused:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        await asyncio.sleep(self.delay)
        with self.received:
            self.envelopes.append(envelope)
            self.mails.append(
                email.message_from_bytes(envelope.content, policy=email.policy.default)
            )
            self.received.notify_all()
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (auth_data.login, auth_data.password) == (USERNAME.encode(), PASSWORD.encode())
        if ok:
            self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=ok, handled=False)  # handled=False: it answers 535

    def wait_for(self, count: int, timeout: float = 10.0) -> list:
        with self.received:
            self.received.wait_for(lambda: len(self.mails) >= count, timeout)
        return self.mails


@pytest.fixture
def smtp_server():
    """Starts an SMTP server on a free port (or the given one): its Inbox, with `.port`."""
    controllers = []

    def start(port: int | None = None, delay: float = 0.0, **options) -> Inbox:
        inbox = Inbox(delay)
        if options.pop("login", False):
            options.update(authenticator=inbox.authenticate, auth_required=True)
        controller = Controller(inbox, hostname="127.0.0.1", port=port or free_port(), **options)
        controller.start()
        controllers.append(controller)
        inbox.port = controller.port
        return inbox

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def mail_app(make_app):
    """make_app, and the apps' delivery threads stopped before their database goes."""
    apps = []

    def make(**overrides):
        app = make_app(**{"MAIL_RETRY_INTERVAL": 1} | overrides)
        apps.append(app)
        return app

    yield make
    for app in apps:
        stop_deliverer(app)


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1: (its file, a server context presenting it)."""

    def make(name: str):
        cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
            + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
            + ["-addext", "subjectAltName=IP:127.0.0.1"],
            check=True,
            capture_output=True,
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return cert, context

    return make


def write_mail(app, recipient="reader@example.com"):
    with app.app_context():
        enqueue(
            recipient,
            "verify_email",
            name="Reader",
            email=recipient,
            link="https://app.example.com/verify-email?token=t0ken",
            hours=24,
        )
        db.session.commit()


def outbox(app) -> list[OutboxMail]:
    with app.app_context():
        mails = db.session.scalars(select(OutboxMail).order_by(OutboxMail.id)).all()
        db.session.expunge_all()
        return mails


def send_mail(database_url, smtp_url, **env) -> subprocess.CompletedProcess:
    """`bookshelf send-mail` in a process of its own, as cron runs it."""
    environment = os.environ | {
        "APP_ENV": "testing",
        "DATABASE_URL": database_url,
        "SMTP_URL": smtp_url,
        "MAIL_RETRY_INTERVAL": "1",
    }
    for name in ("SMTP_USERNAME", "SMTP_PASSWORD", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        environment.pop(name, None)
    return subprocess.run(
        [BOOKSHELF, "send-mail"],
        cwd=ROOT,
        env=environment | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def due_now(app) -> None:
    """Make every waiting mail due (instead of waiting out its retry interval)."""
    with app.app_context():
        for mail in db.session.scalars(select(OutboxMail)):
            mail.next_attempt_at = utcnow()
        db.session.commit()


# --- after the commit ---------------------------------------------------------------------------


def test_a_committed_mail_arrives_and_leaves_the_outbox(mail_app, smtp_server, caplog):
    inbox = smtp_server()
    app = mail_app(SMTP_URL=f"smtp://127.0.0.1:{inbox.port}", MAIL_FROM="Shelf <hello@shelf.test>")

    write_mail(app)

    [mail] = inbox.wait_for(1)
    assert mail["From"] == "Shelf <hello@shelf.test>"
    assert mail["To"] == "reader@example.com"
    assert mail["Subject"] == "Confirm your email address for Bookshelf"
    assert mail["Date"] and mail["Message-ID"].endswith("@shelf.test>")
    assert (
        "https://app.example.com/verify-email?token=t0ken"
        in mail.get_body(("plain",)).get_content()
    )
    assert "token=t0ken" in mail.get_body(("html",)).get_content()
    [envelope] = inbox.envelopes
    assert envelope.rcpt_tos == ["reader@example.com"]
    assert wait_for(lambda: not outbox(app)), "a sent mail's row (and its token) is deleted"
    [line] = [r for r in caplog.records if r.name == "bookshelf.mail"]
    assert line.getMessage() == "mail sent"
    assert line.recipient_domain == "example.com" and line.mail_id >= 1
    assert "reader@" not in str(vars(line)), "no address in the log"


def test_a_rolled_back_mail_is_never_sent(mail_app, smtp_server):
    inbox = smtp_server()
    app = mail_app(SMTP_URL=f"smtp://127.0.0.1:{inbox.port}")
    with app.app_context():
        enqueue("gone@example.com", "reset_password", name="A", email="x", link="l", minutes=30)
        db.session.flush()
        db.session.rollback()

    write_mail(app, "kept@example.com")  # the next commit sends its own mail only

    assert [m["To"] for m in inbox.wait_for(1)] == ["kept@example.com"]
    time.sleep(0.3)
    assert [m["To"] for m in inbox.mails] == ["kept@example.com"]
    assert wait_for(lambda: not outbox(app))


def test_without_smtp_url_mail_waits_and_the_command_says_so(mail_app):
    app = mail_app()
    write_mail(app)

    result = app.test_cli_runner().invoke(args=["send-mail"])

    assert result.exit_code == 1
    assert "SMTP_URL is not set: none sent (1 waiting)" in result.output
    assert len(outbox(app)) == 1


def test_a_refused_recipient_fails_alone(mail_app, smtp_server, caplog):
    inbox = smtp_server()
    inbox.refused.add("nobody@example.com")
    writer = mail_app()
    for recipient in ("first@example.com", "nobody@example.com", "last@example.com"):
        write_mail(writer, recipient)
    sender = mail_app(SMTP_URL=f"smtp://127.0.0.1:{inbox.port}")

    with sender.app_context():
        assert deliver_due() == (2, 1)

    assert [m["To"] for m in inbox.wait_for(2)] == ["first@example.com", "last@example.com"]
    [mail] = outbox(writer)
    assert mail.recipient == "nobody@example.com" and mail.attempts == 1
    assert mail.last_error.startswith("SMTPRecipientsRefused")
    [line] = [r for r in caplog.records if r.getMessage() == "mail not sent"]
    assert line.error.startswith("SMTPRecipientsRefused: {'…@example.com': (550")
    assert "nobody@" not in str(vars(line))


# --- a server that is down ----------------------------------------------------------------------


def test_a_server_down_loses_no_mail(mail_app, smtp_server, database_url):
    port = free_port()  # nothing listens there yet
    smtp_url = f"smtp://127.0.0.1:{port}"
    app = mail_app(SMTP_URL=smtp_url)

    write_mail(app)  # the commit succeeds; the send after it fails

    assert wait_for(lambda: outbox(app)[0].attempts >= 1)
    stop_deliverer(app)  # from here on, the command alone sends
    [mail] = outbox(app)
    assert mail.next_attempt_at > utcnow()
    assert mail.last_error.startswith("ConnectionRefusedError")

    due_now(app)
    down = send_mail(database_url, smtp_url)
    assert down.returncode == 1, down.stderr
    assert "0 sent, 1 failed (1 waiting)" in down.stdout
    assert outbox(app)[0].attempts == mail.attempts + 1

    inbox = smtp_server(port=port)
    due_now(app)
    up = send_mail(database_url, smtp_url)

    assert up.returncode == 0, up.stdout + up.stderr
    assert "1 sent, 0 failed (0 waiting)" in up.stdout
    assert [m["To"] for m in inbox.wait_for(1)] == ["reader@example.com"]
    assert outbox(app) == []


def test_the_serving_process_retries_by_itself(mail_app, smtp_server):
    port = free_port()
    app = mail_app(SMTP_URL=f"smtp://127.0.0.1:{port}")
    write_mail(app)
    assert wait_for(lambda: outbox(app)[0].attempts >= 1)

    inbox = smtp_server(port=port)

    assert len(inbox.wait_for(1, timeout=8)) == 1, "retried after MAIL_RETRY_INTERVAL (doubled)"
    assert wait_for(lambda: not outbox(app))


def test_retries_back_off_up_to_the_maximum(mail_app):
    write_mail(mail_app())  # no SMTP_URL: written, not sent
    app = mail_app(
        SMTP_URL=f"smtp://127.0.0.1:{free_port()}",
        MAIL_RETRY_INTERVAL=10,
        MAIL_RETRY_MAX_INTERVAL=25,
    )
    delays = []
    for _ in range(4):
        due_now(app)
        with app.app_context():
            start = utcnow()
            assert deliver_due() == (0, 1)
        mail = outbox(app)[0]
        delays.append(round((mail.next_attempt_at - start).total_seconds()))
    assert delays == [10, 20, 25, 25]
    assert mail.attempts == 4


def test_a_starting_server_sends_what_was_left(mail_app, smtp_server, database_url, tmp_path):
    inbox = smtp_server()
    app = mail_app()  # no SMTP_URL: the mail waits
    write_mail(app)

    server = ServerProcess(
        tmp_path / "server.log",
        DATABASE_URL=database_url,
        SMTP_URL=f"smtp://127.0.0.1:{inbox.port}",
    ).start()
    try:
        assert len(inbox.wait_for(1)) == 1, "sent at start, before any request"
        assert wait_for(lambda: not outbox(app))
    finally:
        server.stop()
    [line] = [line for line in server.log_lines() if line["logger"] == "bookshelf.mail"]
    assert line["message"] == "mail sent" and line["recipient_domain"] == "example.com"


# --- TLS and logins -----------------------------------------------------------------------------


@pytest.mark.parametrize("credentials", ["environment", "url"])
def test_starttls_with_a_login(mail_app, smtp_server, certificate, database_url, credentials):
    cert, context = certificate("server")
    inbox = smtp_server(tls_context=context, require_starttls=True, login=True)
    app = mail_app()
    write_mail(app)
    if credentials == "environment":
        env = {"SMTP_USERNAME": USERNAME, "SMTP_PASSWORD": PASSWORD}
        smtp_url = f"smtp+starttls://127.0.0.1:{inbox.port}"
    else:
        env = {}
        smtp_url = f"smtp+starttls://mailer:s3cret%20p%40ss%3Aword@127.0.0.1:{inbox.port}"

    result = send_mail(database_url, smtp_url, SSL_CERT_FILE=str(cert), **env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(inbox.wait_for(1)) == 1
    assert inbox.logins == [(USERNAME.encode(), PASSWORD.encode())]
    assert outbox(app) == []


def test_a_wrong_password_keeps_the_mail(mail_app, smtp_server, certificate, database_url):
    cert, context = certificate("server")
    inbox = smtp_server(tls_context=context, require_starttls=True, login=True)
    app = mail_app()
    write_mail(app)

    result = send_mail(
        database_url,
        f"smtp+starttls://127.0.0.1:{inbox.port}",
        SSL_CERT_FILE=str(cert),
        SMTP_USERNAME=USERNAME,
        SMTP_PASSWORD="not the password",
    )

    assert result.returncode == 1
    [mail] = outbox(app)
    assert mail.last_error.startswith("SMTPAuthenticationError")
    assert "not the password" not in mail.last_error + result.stdout + result.stderr
    assert inbox.mails == []


def test_starttls_is_required_when_asked_for(mail_app, smtp_server, database_url):
    inbox = smtp_server()  # offers no STARTTLS
    app = mail_app()
    write_mail(app)

    result = send_mail(database_url, f"smtp+starttls://127.0.0.1:{inbox.port}")

    assert result.returncode == 1
    assert outbox(app)[0].last_error.startswith("SMTPNotSupportedError")
    assert inbox.mails == []


def test_implicit_tls(mail_app, smtp_server, certificate, database_url):
    cert, context = certificate("server")
    inbox = smtp_server(ssl_context=context)
    app = mail_app()
    write_mail(app)

    result = send_mail(database_url, f"smtps://127.0.0.1:{inbox.port}", SSL_CERT_FILE=str(cert))

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(inbox.wait_for(1)) == 1
    assert outbox(app) == []


@pytest.mark.parametrize("scheme", ["smtps", "smtp+starttls"])
def test_an_untrusted_certificate_is_refused(
    mail_app, smtp_server, certificate, database_url, scheme
):
    _, context = certificate("server")
    other, _ = certificate("other")  # trusted instead of the server's
    tls = {"ssl_context": context} if scheme == "smtps" else {"tls_context": context}
    inbox = smtp_server(**tls)
    app = mail_app()
    write_mail(app)

    result = send_mail(database_url, f"{scheme}://127.0.0.1:{inbox.port}", SSL_CERT_FILE=str(other))

    assert result.returncode == 1
    [mail] = outbox(app)
    assert "CERTIFICATE_VERIFY_FAILED" in mail.last_error
    assert inbox.mails == []


# --- senders at once ----------------------------------------------------------------------------


def test_senders_at_once_send_each_mail_once(mail_app, smtp_server):
    inbox = smtp_server(delay=0.01)
    writer = mail_app()  # no SMTP_URL: nothing is sent after its commits
    for n in range(30):
        write_mail(writer, f"reader{n}@example.com")
    sender = mail_app(SMTP_URL=f"smtp://127.0.0.1:{inbox.port}")
    totals = []

    def send():
        with sender.app_context():
            sent = 0
            while (batch := deliver_due(limit=4)) != (0, 0):  # none left it could claim
                sent += batch[0]
            totals.append(sent)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum(totals) == 30
    recipients = [m["To"] for m in inbox.wait_for(30)]
    assert sorted(recipients) == sorted(f"reader{n}@example.com" for n in range(30))
    assert outbox(writer) == []
