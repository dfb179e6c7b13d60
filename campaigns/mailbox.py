"""The development email backend: keeps every message in the local mailbox table."""

from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMultiAlternatives


class MailboxBackend(BaseEmailBackend):
    def send_messages(self, email_messages):
        from .models import MailboxMessage

        kept = []
        for message in email_messages:
            html = ""
            if isinstance(message, EmailMultiAlternatives):
                html = next(
                    (content for content, mime in message.alternatives if mime == "text/html"), ""
                )
            mime = message.message()
            kept.append(
                MailboxMessage(
                    message_id=mime.get("Message-ID", ""),
                    from_email=message.from_email,
                    to=", ".join(message.recipients()),
                    subject=message.subject,
                    body_text=message.body if message.content_subtype == "plain" else "",
                    body_html=html or (message.body if message.content_subtype == "html" else ""),
                    headers={k: str(v) for k, v in mime.items()},
                    raw=mime.as_string(),
                )
            )
        MailboxMessage.objects.bulk_create(kept)
        return len(kept)
