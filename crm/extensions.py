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
