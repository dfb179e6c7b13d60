"""Template tags that keep, per process, HTML that cannot differ between views, so the
preference page does not render it again on each one (see bench/portal_load.py).

`{% per_language %}…{% end_per_language %}`: a stretch made only of text and
`{% translate "…" %}` tags, rendered once per language (and escaping mode). What may go inside is
checked when the template is compiled: a variable, a filter or any other tag is refused, so
nothing that differs between people or views can be kept by mistake. The tags stay ordinary
`{% translate %}` tags, so `makemessages` still finds every string.

`{% include_pure "name.html" a=x %}`: an include that sees only its arguments, rendered once per
language, time zone and set of arguments (see the tag). `|day`: a date in the page's language.
"""

import functools
from datetime import date, datetime

from django import template
from django.template.base import TextNode, token_kwargs
from django.templatetags.i18n import TranslateNode
from django.utils import formats, timezone, translation

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


class PureIncludeNode(template.Node):
    LIMIT = 10_000  # distinct argument sets kept, per include, before starting afresh

    def __init__(self, name: str, arguments: dict):
        self.name, self.arguments = name, arguments
        self.rendered: dict[tuple, str] = {}

    def render(self, context):
        values = {k: v.resolve(context) for k, v in self.arguments.items()}
        # A date shown inside depends on the time zone too.
        key = (translation.get_language(), timezone.get_current_timezone_name(),
               context.autoescape, *sorted(values.items()))
        try:
            output = self.rendered.get(key)
        except TypeError:  # an unhashable argument: render, keep nothing
            key, output = None, None
        if output is None:
            included = context.template.engine.get_template(self.name)
            output = included.render(template.Context(values, autoescape=context.autoescape))
            if key is not None:
                if len(self.rendered) >= self.LIMIT:
                    self.rendered.clear()
                self.rendered[key] = output
        return output


@register.tag
def include_pure(parser, token):
    """`{% include_pure "name.html" a=x b=y %}`: like `{% include "name.html" with a=x b=y only %}`,
    and its output is kept per language, time zone and arguments. The included template sees
    nothing but its arguments (no request, no context processors), so the same arguments always
    render the same HTML: a consent's text, its answer buttons, the policy, are rendered once
    per process, not per view."""
    bits = token.split_contents()
    if len(bits) < 2 or bits[1][0] not in "\"'" or bits[1][-1] != bits[1][0]:
        raise template.TemplateSyntaxError('include_pure takes a quoted template name first.')
    arguments = token_kwargs(bits[2:], parser, support_legacy=False)
    if len(arguments) != len(bits) - 2:
        raise template.TemplateSyntaxError("include_pure takes only name=value arguments.")
    return PureIncludeNode(bits[1][1:-1], arguments)


@register.filter(expects_localtime=True)
def day(value) -> str:
    """`value|date:"DATE_FORMAT"`, kept per language and day: formatting a date costs more than
    the rest of a consent's line, and the same days recur on every page."""
    if not value:
        return ""
    return _day(value.date() if isinstance(value, datetime) else value,
                translation.get_language())


@functools.lru_cache(maxsize=4096)
def _day(on: date, language: str) -> str:
    return formats.date_format(on, "DATE_FORMAT")  # in `language`, the active one
