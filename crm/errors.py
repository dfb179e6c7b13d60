"""Errors raised by services, each carrying the HTTP status the API answers with.

Higher apps subclass `ServiceError`; the API's exception handler (config/api.py) turns any of them
into a response, so a view never restates which rule was broken.
"""


class ServiceError(Exception):
    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict:
        if self.field:
            return {self.field: [self.message]}
        return {"detail": self.message, "code": self.code}


class ProcessingStopped(ServiceError):
    """The person asked us to stop processing their data (GDPR Art. 18): the record is locked."""

    status_code = 423
    code = "processing_stopped"


class RecordErased(ServiceError):
    """The person's data was erased (GDPR Art. 17): the tombstone takes no new personal data."""

    status_code = 409
    code = "erased"


class FieldLocked(ServiceError):
    """The person revoked consent to store this field: it stays empty until a new grant."""

    status_code = 400
    code = "field_locked"


class TransitionForbidden(ServiceError):
    status_code = 409
    code = "transition_forbidden"
