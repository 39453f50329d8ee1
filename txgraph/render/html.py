"""Self-contained HTML pages: one graph, or a plan report with a picture per step.

A plan report shows, per step, the verdict, QEMU's predicted reply (or
refusal with the rule), the graph diff and checker result in the words of
``txgraph plan``'s text report, and the graph before and after the step with
the changed nodes and edges highlighted. Pictures are inline SVG, so the file
opens anywhere without a server. A small script checks on load that every
step section and picture is present and records the outcome in
``document.body.dataset.check`` (the browser test reads it).
"""

from __future__ import annotations

import html
import json
from typing import Any

from txgraph.plan.render import result_sentence, source_line, step_lines
from txgraph.render.dot import ADDED, CHANGED, REMOVED, to_dot
from txgraph.render.picture import Picture, StepPictures, changes
from txgraph.render.svg import dot_to_svg

__all__ = ["graph_page", "plan_page"]

_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 2em; color: #24292f; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
.step { border: 1px solid #d0d7de; border-radius: 6px; padding: 1em; margin: 1em 0; }
.ok { color: #1a7f37; } .fail { color: #cf222e; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; font-size: .85em; }
.pictures { display: flex; gap: 1.5em; align-items: flex-start; }
.pictures figure { flex: 1 1 0; min-width: 0; }
figure { margin: 0; } figcaption { font-size: .85em; color: #57606a; text-align: center; }
figure svg { width: 100%; height: auto; }
.legend span { margin-right: 1.2em; font-size: .85em; }
"""

_CHECK_SCRIPT = """
window.addEventListener("error", function (e) {
  document.body.dataset.check = "error: " + e.message;
});
window.addEventListener("load", function () {
  if ((document.body.dataset.check || "").indexOf("error") === 0) { return; }
  var want = parseInt(document.body.dataset.steps, 10);
  var steps = document.querySelectorAll("section.step").length;
  var missing = 0;
  document.querySelectorAll("figure").forEach(function (f) {
    var svg = f.querySelector("svg");
    if (!svg || !svg.querySelector("g")) { missing += 1; }
  });
  document.body.dataset.check = (steps === want && missing === 0)
    ? "ok: " + steps + " steps, " + document.querySelectorAll("figure").length + " pictures"
    : "incomplete: " + steps + " of " + want + " steps, " + missing + " pictures missing";
});
"""


def _svg(picture: Picture, **kw: Any) -> str:
    svg = dot_to_svg(to_dot(picture, **kw))
    # drop the XML prolog and DOCTYPE: the SVG is inlined into HTML
    return svg[svg.index("<svg") :]


def _legend() -> str:
    return (
        '<p class="legend">'
        f'<span style="color:{ADDED}">■ added</span>'
        f'<span style="color:{CHANGED}">■ changed</span>'
        f'<span style="color:{REMOVED}">■ removed</span>'
        "<span>dashed: opened for its parent (inline or from an image header), not by a "
        "blockdev-add of its own · bold blue edge: frozen by a job</span></p>"
    )


def _page(title: str, body: list[str], steps: int) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{_STYLE}</style>",
            f"<script>{_CHECK_SCRIPT}</script>",
            "</head>",
            f'<body data-steps="{steps}">',
            *body,
            "</body></html>",
            "",
        ]
    )


def graph_page(picture: Picture, title: str) -> str:
    """One graph state as a page."""
    body = [
        f"<h1>{html.escape(title)}</h1>",
        _legend(),
        f"<figure>{_svg(picture)}<figcaption>{len(picture.nodes)} nodes, "
        f"{len(picture.edges)} edges</figcaption></figure>",
    ]
    return _page(title, body, 0)


def plan_page(report: dict[str, Any], pictures: dict[int, StepPictures], title: str) -> str:
    """The plan report (``PlanReport.to_dict()``) with before/after pictures per step."""
    verdict_class = "ok" if report["ok"] else "fail"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(source_line(report))}</p>",
        f'<p class="{verdict_class}"><b>result: {html.escape(result_sentence(report))}</b></p>',
        _legend(),
    ]
    for step in report["steps"]:
        index = step["index"]
        mark, cls = ("OK", "ok") if step["ok"] else ("FAIL", "fail")
        body.append(f'<section class="step" id="step-{index + 1}">')
        body.append(
            f'<h2><span class="{cls}">[{mark}]</span> step {index + 1}: '
            f"{html.escape(step['label'])}</h2>"
        )
        body.append("<pre>" + html.escape(json.dumps(step["step"], indent=2)) + "</pre>")
        body.append("<pre>" + html.escape("\n".join(step_lines(step, report["policy"]))) + "</pre>")
        shot = pictures.get(index)
        if shot is not None:
            delta = changes(shot.before, shot.after)
            body.append('<div class="pictures">')
            body.append(
                f"<figure>{_svg(shot.before, highlight=delta, side='before')}"
                "<figcaption>before</figcaption></figure>"
            )
            if step["accepted"]:
                body.append(
                    f"<figure>{_svg(shot.after, highlight=delta, side='after')}"
                    "<figcaption>after</figcaption></figure>"
                )
            body.append("</div>")
        body.append("</section>")
    missing = len(report["plan"]) - len(report["steps"])
    if missing > 0:
        body.append(f'<p class="fail">{missing} step(s) not reached</p>')
    return _page(title, body, len(report["steps"]))
