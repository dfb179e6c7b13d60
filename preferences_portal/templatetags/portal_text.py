"""`{% per_language %}…{% end_per_language %}`: a stretch of a page made only of text and
`{% translate "…" %}` tags, rendered once per language (and escaping mode) per process instead of
on every view. The preference page is mostly such text, and each `{% translate %}` costs a
catalog lookup per view (see bench/portal_load.py). What may go inside is checked when the
template is compiled: a variable, a filter or any other tag is refused, so nothing that differs
between people or views can be kept by mistake. The tags stay ordinary `{% translate %}` tags,
so `makemessages` still finds every string.
"""

from django import template
from django.template.base import TextNode
from django.templatetags.i18n import TranslateNode
from django.utils import translation

register = template.Library()


def _constant(node) -> bool:
    if isinstance(node, TextNode):
        return True
    expression = getattr(node, "filter_expression", None)
    return (isinstance(node, TranslateNode) and node.asvar is None and not expression.filters
            and expression.var.literal is not None)


class PerLanguageNode(template.Node):
    def __init__(self, nodelist):
        self.nodelist = nodelist
        self.rendered: dict[tuple, str] = {}

    def render(self, context):
        key = (translation.get_language(), context.autoescape)
        output = self.rendered.get(key)
        if output is None:
            output = self.rendered[key] = self.nodelist.render(context)
        return output


@register.tag
def per_language(parser, token):
    nodelist = parser.parse(("end_per_language",))
    parser.delete_first_token()
    for node in nodelist:
        if not _constant(node):
            raise template.TemplateSyntaxError(
                "per_language holds only text and {% translate \"…\" %} tags, "
                f"not {node.token.contents if node.token else node!r}.")
    return PerLanguageNode(nodelist)
