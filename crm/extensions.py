"""Extension points crm offers to the apps above it (DESIGN: dependencies point one way).

An app registers in its AppConfig.ready(); crm calls what is registered without importing the
app. Each registry maps a name to a function.
"""

from collections.abc import Callable
from dataclasses import dataclass

# name -> fn(queryset, raw value) -> queryset; raises ValidationError({name: [...]}) on bad input
person_filters: dict[str, Callable] = {}
# name -> fn(person) -> JSON-able dict: the sections of GET /api/persons/{id}/explain/
explain_sections: dict[str, Callable] = {}


@dataclass(frozen=True)
class SettingsSection:
    """One section of /api/settings/: read() -> dict; update(dict) raises ValidationError."""

    read: Callable[[], dict]
    update: Callable[[dict], None]
    permission: str


settings_sections: dict[str, SettingsSection] = {}

# fn(request, person) -> (label, url) | None: buttons on the staff person page (opt-in, …)
person_links: list[Callable] = []

# The rights (DESIGN: "crm defines the interface and each app that stores personal data
# registers its eraser and its exporter"). Each is a function of the person id, called by
# crm.rights inside the erasing / exporting transaction.
# name -> fn(person_id) -> None: delete or blank what the app holds about the person
erasers: dict[str, Callable] = {}
# name -> fn(person_id) -> JSON-able (list of dicts, or a dict): "Download my data"
exporters: dict[str, Callable] = {}
# event -> fn(person_id) -> None: tell the contact about a rights event (e.g. "processing_resumed"
# emails them before the lift commits). Registered by the mail layer.
rights_notifiers: dict[str, Callable] = {}
# name -> fn(person_id) -> list of {"name", "since", "what"}: partners that received their data
data_recipients: dict[str, Callable] = {}
# name -> fn() -> value: settings crm's own periodic tasks need but that higher apps own
# ("unconfirmed_lead_retention_months" -> int | None, registered by consents).
rights_settings: dict[str, Callable] = {}


# -- the staff person admin (crm/admin.py reads these at request time) ---------------------------

@dataclass(frozen=True)
class PersonPage:
    """A staff page of a higher app on one person: `<object_id>/<route>` under each person
    admin (people, leads, contacts), URL name `<app>_<model>_<name>` (e.g. reversed as
    "admin:crm_person_<name>"); `view(model_admin, request, object_id, **route_kwargs)`."""

    route: str
    name: str
    view: Callable


person_pages: list[PersonPage] = []
person_actions: list[Callable] = []  # admin actions on the person lists
person_inlines: list = []  # inline classes on the person page
person_list_filters: list = []  # list filters of the person lists
