"""txgraph.render: pictures of block graphs and of plan changes (DOT, SVG, HTML).

``picture_of(graph)`` takes what a picture shows from the model; ``to_dot``
writes Graphviz DOT; ``dot_to_svg`` lays it out with Graphviz; ``graph_page``
and ``plan_page`` build self-contained HTML. ``StepRecorder`` is the
``verify_plan`` observer that keeps a before/after picture per plan step.
"""

from __future__ import annotations

from txgraph.render.dot import to_dot
from txgraph.render.html import graph_page, plan_page
from txgraph.render.picture import (
    Changes,
    Picture,
    StepPictures,
    StepRecorder,
    changes,
    picture_of,
)
from txgraph.render.svg import RenderError, dot_to_svg

__all__ = [
    "Picture",
    "Changes",
    "StepPictures",
    "StepRecorder",
    "picture_of",
    "changes",
    "to_dot",
    "dot_to_svg",
    "graph_page",
    "plan_page",
    "RenderError",
]
