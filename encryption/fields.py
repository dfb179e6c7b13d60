"""The encrypted model field.

The attribute of an encrypted field holds a `Sealed` value: its text form is the stored mask, so
templates, lists, exports and logs show the mask and nothing decrypts by accident. Assigning a
string seals it at once (the row id is known: primary keys are generated in Python) and fills
the mask and blind-index columns in step. Only `isnull` lookups are allowed.
"""

from django.core.exceptions import FieldError
from django.db import models
from django.db.models.query_utils import DeferredAttribute

from .blind_index import blind_index
from .masking import mask
from .values import seal_value


class EqualityIndex(models.Index):
    """An index for exact-match lookups only — a blind index column: a hash index on PostgreSQL
    (a third of the btree's cost per inserted row for these random tags, measured on the
    import's COPY), a plain index elsewhere. One column; `condition` as for `Index`."""

    def create_sql(self, model, schema_editor, using="", **kwargs):
        if schema_editor.connection.vendor == "postgresql":
            using = " USING hash"
        return super().create_sql(model, schema_editor, using=using, **kwargs)


class Sealed:
    """A sealed value as stored: bytes plus the mask that may be shown in its place."""

    __slots__ = ("blob", "masked")

    def __init__(self, blob: bytes, masked: str = ""):
        self.blob = bytes(blob)
        self.masked = masked

    def __str__(self):
        return self.masked

    def __repr__(self):
        return f"<Sealed {self.masked!r}>"

    def __eq__(self, other):
        return isinstance(other, Sealed) and other.blob == self.blob

    def __hash__(self):
        return hash(self.blob)


class _Descriptor(DeferredAttribute):
    """Loads like any deferred field; seals plaintext on assignment."""

    def __get__(self, instance, owner):
        if instance is None:
            return self
        value = super().__get__(instance, owner)
        if isinstance(value, Sealed) and not value.masked:
            value.masked = getattr(instance, self.field.mask_field, "") or ""
        return value

    def __set__(self, instance, value):
        field = self.field
        if value is None or value == "":
            instance.__dict__[field.attname] = None
            self._companions(instance, "", "")
        elif isinstance(value, Sealed):
            instance.__dict__[field.attname] = value
        elif isinstance(value, bytes | memoryview):
            instance.__dict__[field.attname] = Sealed(value)
        elif isinstance(value, str):
            masked = mask(value, field.mask_rule)
            blob = seal_value(value, subject_id=instance.pk, context=field.context)
            instance.__dict__[field.attname] = Sealed(blob, masked)
            index = blind_index(value, context=field.context) if field.index_field else ""
            self._companions(instance, masked, index)
        else:
            raise TypeError(f"{field.name} takes text, not {type(value).__name__}.")

    def _companions(self, instance, masked: str, index: str):
        instance.__dict__[self.field.mask_field] = masked
        if self.field.index_field:
            instance.__dict__[self.field.index_field] = index


class EncryptedField(models.BinaryField):
    """A sealed text value with a stored mask (`mask_field`) and optional blind index.

    Declare the mask and index fields *before* this one on the model: Model.__init__ assigns
    fields in order, and their defaults must not overwrite what sealing just computed.
    """

    def __init__(self, *args, mask_rule="fixed:8", mask_field=None, index_field=None,
                 context=None, **kwargs):
        self.mask_rule = mask_rule
        self.mask_field = mask_field
        self.index_field = index_field
        self.context = context
        kwargs.setdefault("null", True)
        kwargs.setdefault("blank", True)
        kwargs["editable"] = False
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("editable", None)
        kwargs.update(mask_rule=self.mask_rule, mask_field=self.mask_field,
                      index_field=self.index_field, context=self.context)
        return name, path, args, kwargs

    def contribute_to_class(self, cls, name, **kwargs):
        super().contribute_to_class(cls, name, **kwargs)
        if self.mask_field is None:
            self.mask_field = f"{name}_mask"
        if self.context is None:
            self.context = f"{cls._meta.label_lower}.{name}"
        setattr(cls, self.attname, _Descriptor(self))

    def from_db_value(self, value, expression, connection):
        return None if value is None else bytes(value)

    def get_prep_value(self, value):
        if isinstance(value, Sealed):
            return value.blob
        if isinstance(value, str):
            raise FieldError(f"{self.name}: assign plaintext to a model instance, which seals it.")
        return super().get_prep_value(value)

    def get_lookup(self, lookup_name):
        if lookup_name != "isnull":
            raise FieldError(
                f"{self.name} is encrypted: only `isnull` lookups work. Search the exposed "
                f"characters of `{self.mask_field}`"
                + (f" or the blind index via crm.selectors.find_by_{self.name}()"
                   if self.index_field else "") + "."
            )
        return super().get_lookup(lookup_name)

    def get_transform(self, name):
        raise FieldError(f"{self.name} is encrypted: no transforms.")

    def value_to_string(self, obj):
        # Serialisation (dumpdata) shows the mask, never the ciphertext or plaintext.
        return str(getattr(obj, self.attname) or "")


def _encrypted_fields(model) -> dict:
    return {f.name: f for f in model._meta.concrete_fields if isinstance(f, EncryptedField)}


class EncryptedQuerySet(models.QuerySet):
    """Keeps the mask and blind-index columns in step on `update()` and `bulk_update()`."""

    def update(self, **kwargs):
        # Plain values are sealed per row; expressions (bulk_update's CASE) pass straight through.
        encrypted = {k: v for k, v in kwargs.items()
                     if k in _encrypted_fields(self.model) and (v is None or isinstance(v, str))}
        if not encrypted:
            return super().update(**kwargs)
        # Every row needs its own ciphertext (the row id is bound into it): seal per row.
        rows = list(self.only("pk"))
        for row in rows:
            for name, value in encrypted.items():
                setattr(row, name, value)
        plain = {k: v for k, v in kwargs.items() if k not in encrypted}
        if plain:
            super().update(**plain)
        self.model._default_manager.bulk_update(rows, list(encrypted))
        return len(rows)

    def bulk_update(self, objs, fields, batch_size=None):
        return super().bulk_update(objs, with_companions(self.model, fields),
                                   batch_size=batch_size)


def with_companions(model, fields) -> list:
    """`fields` with the mask and blind-index columns of every encrypted field among them:
    what a partial write of those fields must write too."""
    fields = list(fields)
    for name, field in _encrypted_fields(model).items():
        if name in fields:
            fields.append(field.mask_field)
            if field.index_field:
                fields.append(field.index_field)
    return list(dict.fromkeys(fields))


class EncryptedModel(models.Model):
    """Base of a model with encrypted fields: `save(update_fields=[...])` naming one writes its
    mask and blind index with it."""

    class Meta:
        abstract = True

    def save(self, *args, update_fields=None, **kwargs):
        if update_fields is not None:
            update_fields = with_companions(type(self), update_fields)
        super().save(*args, update_fields=update_fields, **kwargs)
