"""Talking to the SMTP server of SMTP_URL: `smtp://host:25` (plain), `smtp+starttls://host:587`
(STARTTLS, refused if the server does not offer it) or `smtps://host:465` (TLS from the start).

TLS verifies the server's certificate and name against the system's trust store (OpenSSL's
SSL_CERT_FILE or SSL_CERT_DIR name another one). The login is SMTP_USERNAME and SMTP_PASSWORD, or
else the URL's `user:password@` (percent-encoded).
"""

import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from urllib.parse import unquote, urlsplit

PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


@dataclass(frozen=True)
class Server:
    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None
    timeout: float


def server(config: Mapping) -> Server:
    """SMTP_URL and the credentials, read; ValueError names what is wrong (never the password)."""
    parts = urlsplit(config["SMTP_URL"])
    if parts.scheme not in PORTS:
        raise ValueError(
            f"SMTP_URL must start with {', '.join(f'{s}://' for s in PORTS)}, not {parts.scheme!r}"
        )
    if not parts.hostname:
        raise ValueError("SMTP_URL has no host")
    return Server(
        scheme=parts.scheme,
        host=parts.hostname,
        port=parts.port or PORTS[parts.scheme],
        username=config.get("SMTP_USERNAME") or unquote(parts.username or "") or None,
        password=config.get("SMTP_PASSWORD") or unquote(parts.password or "") or None,
        timeout=config["SMTP_TIMEOUT"],
    )


def message(mail_from: str, recipient: str, subject: str, text: str, html: str) -> EmailMessage:
    """The mail as sent: plain text, and HTML as its alternative."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "localhost"
    email = EmailMessage()
    email["From"] = mail_from
    email["To"] = recipient
    email["Subject"] = subject
    email["Date"] = formatdate(localtime=False)
    email["Message-ID"] = make_msgid(domain=domain)
    email.set_content(text)
    email.add_alternative(html, subtype="html")
    return email


def connect(server: Server) -> smtplib.SMTP:
    """An open, greeted and logged-in connection; the caller quits it (or closes it on error)."""
    context = ssl.create_default_context()
    if server.scheme == "smtps":
        connection = smtplib.SMTP_SSL(
            server.host, server.port, timeout=server.timeout, context=context
        )
    else:
        connection = smtplib.SMTP(server.host, server.port, timeout=server.timeout)
    try:
        connection.ehlo()
        if server.scheme == "smtp+starttls":
            connection.starttls(context=context)  # SMTPNotSupportedError if not offered
            connection.ehlo()
        if server.username or server.password:
            connection.login(server.username or "", server.password or "")
    except BaseException:
        connection.close()
        raise
    return connection
