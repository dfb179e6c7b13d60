"""{% per_language %}: text-only stretches rendered once per language, and nothing else."""

import pytest
from django.template import Context, Template, TemplateSyntaxError
from django.utils import translation

LOAD = "{% load i18n portal_text %}"


def test_renders_each_language_once_and_keeps_it():
    template = Template(LOAD + '{% per_language %}<h2>{% translate "Your rights" %}</h2>'
                               "{% end_per_language %}")
    with translation.override("it"):
        italian = template.render(Context())
    with translation.override("en"):
        english = template.render(Context())
    assert english == "<h2>Your rights</h2>" and italian != english
    node = next(n for n in template.nodelist if hasattr(n, "rendered"))
    assert set(node.rendered) == {("it", True), ("en", True)}
    with translation.override("it"):
        assert template.render(Context()) == italian


@pytest.mark.parametrize("inside", [
    "{{ page.address }}",
    '{% translate page.title %}',
    '{% translate "Erasure"|upper %}',
    '{% translate "Erasure" as erasure %}',
    '{% if page.full %}x{% endif %}',
    "{% csrf_token %}",
])
def test_refuses_anything_that_could_differ_between_views(inside):
    with pytest.raises(TemplateSyntaxError, match="per_language holds only text"):
        Template(LOAD + "{% per_language %}" + inside + "{% end_per_language %}")


def test_a_pure_include_renders_once_per_language_and_arguments():
    from django.template import engines

    engine = engines["django"].engine
    template = engine.from_string(
        LOAD + '{% include_pure "preferences_portal/_consent_text.html" title=t text=x %}')
    first = template.render(Context({"t": "Tracking <b>", "x": "Counts opens."}))
    assert "<legend>Tracking &lt;b&gt;</legend>" in first
    node = next(n for n in template.nodelist if hasattr(n, "rendered"))
    assert len(node.rendered) == 1
    assert template.render(Context({"t": "Tracking <b>", "x": "Counts opens."})) == first
    other = template.render(Context({"t": "Partners", "x": "Offers."}))
    assert "Partners" in other and len(node.rendered) == 2
    # It sees only its arguments: nothing else of the page's context leaks in or is kept.
    assert "secret" not in template.render(Context({"t": "A", "x": "B", "title": "secret"}))


def test_a_pure_include_takes_a_quoted_name_and_named_arguments_only():
    for bad in ('{% include_pure name %}', '{% include_pure "x.html" a %}'):
        with pytest.raises(TemplateSyntaxError, match="include_pure takes"):
            Template(LOAD + bad)


def test_day_is_the_date_filter_in_the_page_language_and_time_zone(settings):
    from datetime import UTC, datetime

    from django.utils import timezone

    late = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    template = Template(LOAD + '{{ at|day }}|{{ at|date:"DATE_FORMAT" }}')
    for language in ("en", "it"):
        for zone in ("UTC", "Europe/Rome"):  # 00:30 on 2 March in Rome
            with translation.override(language), timezone.override(zone):
                ours, django = template.render(Context({"at": late})).split("|")
                assert ours == django
    assert Template(LOAD + "{{ at|day }}").render(Context({"at": None})) == ""
