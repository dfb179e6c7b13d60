"""Settings: the field access log, searchable and read-only (append-only by design)."""

from django.contrib import admin

from config.readonly_admin import ReadOnlyAdminMixin

from .models import FieldAccessLog


@admin.register(FieldAccessLog)
class FieldAccessLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("seq", "at", "username", "role", "subject_id", "field", "reason", "ip")
    list_filter = ("field", "role")
    search_fields = ("username", "=subject_id", "field", "reason")
    date_hierarchy = "at"
    ordering = ("-seq",)

    def get_search_results(self, request, queryset, search_term):
        from django.core.exceptions import ValidationError

        try:
            return super().get_search_results(request, queryset, search_term)
        except ValidationError:
            # A term that is not a UUID cannot match subject_id; search the other columns.
            return queryset.filter(username__icontains=search_term) | queryset.filter(
                field__icontains=search_term) | queryset.filter(
                reason__icontains=search_term), False

