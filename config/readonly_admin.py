"""Admin plumbing shared by apps: a read-only model admin for append-only records."""


class ReadOnlyAdminMixin:
    """No add, change or delete from the staff UI: the record is written by a service only."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
