"""Data keys (envelope encryption) and the append-only field access log."""

from django.conf import settings
from django.db import models
from django.db.models.functions import Now
from django.utils.translation import gettext_lazy as _


class DataKey(models.Model):
    """One subject's (a person's) data key, wrapped by a master key.

    Lives in the `keys` database when KEYS_DATABASE_URL is set (see router.py). Destroying the
    row makes every value sealed under it unreadable everywhere, backups of the main database
    included: that is how erasure shreds encrypted data.
    """

    subject_id = models.UUIDField(primary_key=True)
    key_id = models.CharField(max_length=32)
    master_key_id = models.CharField(max_length=32)
    wrapped = models.BinaryField()
    # The database's clock: an import writes a key a person, and parsing a timestamp's text
    # was an eighth of PostgreSQL's work for each.
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        verbose_name = _("data key")
        # No index on `master_key_id`: a row is written for every person, and only a rotation
        # looks for keys by master key — walking them in primary-key order (datakeys.rewrap_batch).

    def __str__(self):
        return f"data key of {self.subject_id}"


class FieldAccessLog(models.Model):
    """Who revealed which sensitive field of whom, when, from where and why.

    Append-only: the application never updates or deletes a row. Each row carries a keyed hash
    over its content and the previous row's hash, so an edited or removed row breaks the chain
    (`manage.py verify_access_log`).
    """

    seq = models.BigIntegerField(unique=True)
    at = models.DateTimeField(db_index=True)
    # No constraint and nothing done when the user is deleted: a user's removal must not
    # rewrite the log (`username` keeps who it was).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.DO_NOTHING, related_name="+",
        db_constraint=False,
    )
    username = models.CharField(_("user"), max_length=150, db_index=True)
    role = models.CharField(_("role"), max_length=150, blank=True)
    subject_id = models.UUIDField(_("person"), db_index=True)
    field = models.CharField(_("field"), max_length=64, db_index=True)
    reason = models.TextField(_("reason"))
    ip = models.GenericIPAddressField(_("from"), null=True, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-seq"]
        verbose_name = _("field access")
        verbose_name_plural = _("field access log")

    def __str__(self):
        return f"#{self.seq} {self.username} {self.field}"


class FieldAccessLogHead(models.Model):
    """The chain's last row as of the last append — its seq and hash, with a keyed hash over
    both — so that rows removed from the end of the log, or the whole log, are noticed too: a
    removed tail leaves no gap and no broken link. One row, rewritten by each append in the
    same transaction (it is not the log)."""

    seq = models.BigIntegerField()
    hash = models.CharField(max_length=64)
    mac = models.CharField(max_length=64)

    class Meta:
        verbose_name = _("field access log head")

    def __str__(self):
        return f"head #{self.seq}"
