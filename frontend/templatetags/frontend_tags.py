import plotly
from django import template
from django.urls import reverse

register = template.Library()


@register.simple_tag
def plotly_src() -> str:
    """URL of the bundled Plotly.js; the version in the path makes long caching safe."""
    return reverse("plotly-js", kwargs={"version": plotly.__version__})
