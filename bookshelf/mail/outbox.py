"""The outbox: `enqueue` renders a mail and adds it to the session as an
OutboxMail row, so that it commits or rolls back with the change that causes it (a request never
loses its mail, and a rolled-back change never sends one). bookshelf.mail.delivery sends it once
the transaction has committed, and retries what could not be sent.

The mails are Jinja templates in this package (templates/NAME.txt and NAME.html, escaped), given
the product's name and whatever the caller passes.
"""

from flask import current_app
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from ..extensions import db
from ..models import OutboxMail

SUBJECTS = {
    "verify_email": "Confirm your email address for {product}",
    "reset_password": "Reset your {product} password",
}

_templates = Environment(
    loader=PackageLoader("bookshelf.mail", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,  # a template naming a value nobody passed fails, in the tests
    keep_trailing_newline=True,
)


def enqueue(recipient: str, template: str, **context) -> OutboxMail:
    """Add the mail `template` to `recipient` to the session; the caller commits."""
    product = current_app.config["PRODUCT_NAME"]
    values = {"product": product, **context}
    mail = OutboxMail(
        recipient=recipient,
        subject=SUBJECTS[template].format(product=product),
        text_body=_templates.get_template(f"{template}.txt").render(values),
        html_body=_templates.get_template(f"{template}.html").render(values),
    )
    db.session.add(mail)
    return mail
