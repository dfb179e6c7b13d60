"""The staff people lists count at most `cap` matches.

An exact count over a million people filtered by consent × opt-in costs hundreds of
milliseconds, the capped one tens (bench/consent_filter.py). Lists say "more than 2,000" past
the cap; exact totals are in the consent report and the API.
"""

from django.core.paginator import Paginator
from django.utils.functional import cached_property


class CappedCountPaginator(Paginator):
    cap = 2_000

    @cached_property
    def count(self):
        counted = self.object_list.order_by()[: self.cap + 1].count()
        self.capped = counted > self.cap
        return counted

    capped = False
