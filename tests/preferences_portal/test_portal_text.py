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
