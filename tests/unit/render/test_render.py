"""Pictures of graphs: what a picture shows, how changes are highlighted, and the SVG."""

from __future__ import annotations

from pathlib import Path

from txgraph.qmp.engine import Engine
from txgraph.render import StepRecorder, changes, dot_to_svg, picture_of, to_dot
from txgraph.render.dot import ADDED, CHANGED, REMOVED


def _engine(*messages: dict[str, object]) -> Engine:
    engine = Engine()
    for message in messages:
        reply = engine.execute(message)
        assert "return" in reply, reply
    return engine


def _add(args: dict[str, object]) -> dict[str, object]:
    return {"execute": "blockdev-add", "arguments": args}


def test_picture_shows_nodes_edges_perms_and_how_nodes_came_to_be() -> None:
    engine = _engine(
        _add(
            {
                "driver": "raw",
                "node-name": "top",
                "file": {"driver": "null-co", "node-name": "inline0"},
            }
        ),
        _add({"driver": "null-co", "node-name": "ro0", "read-only": True}),
    )
    pic = picture_of(engine.context.session.graph)
    assert set(pic.nodes) == {"top", "inline0", "ro0"}
    assert pic.nodes["inline0"].implicit_open and not pic.nodes["top"].implicit_open
    assert pic.nodes["ro0"].read_only and not pic.nodes["top"].read_only
    edge = pic.edges["top/file"]
    # no user above: raw takes nothing on its file and shares what QEMU's raw shares
    assert edge.child == "inline0" and edge.perm == () and not edge.frozen
    assert edge.shared == ("resize", "write-unchanged", "write", "consistent-read")
    dot = to_dot(pic)
    assert '"top" -> "inline0"' in dot
    assert "raw · rw" in dot and "null-co · ro" in dot
    assert 'style="rounded,dashed"' in dot  # the inline child


def test_frozen_links_and_hostile_filenames_are_drawn_safely(tmp_path: Path) -> None:
    image = tmp_path / 'a<b>&"c.img'
    image.write_bytes(bytes(1 << 20))
    engine = _engine(
        _add({"driver": "file", "node-name": "n0", "filename": str(image)}),
        _add({"driver": "raw", "node-name": "r0", "file": "n0"}),
    )
    graph = engine.context.session.graph
    found = graph.child_edge("r0", "file")
    assert found is not None
    found[1].frozen = True  # as bdrv_freeze_backing_chain leaves it for a job
    pic = picture_of(graph)
    assert pic.nodes["n0"].filename == str(image)
    dot = to_dot(pic)
    assert "frozen" in dot and "style=bold" in dot
    assert "a&lt;b&gt;&amp;&quot;c.img" in dot
    svg = dot_to_svg(dot)
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "<title>r0&#45;&gt;n0</title>" in svg  # Graphviz names the edge in the SVG


def test_step_changes_are_coloured_on_the_right_side() -> None:
    engine = _engine(_add({"driver": "null-co", "node-name": "disk"}))
    session = engine.context.session
    recorder = StepRecorder()
    recorder(0, "before", session.graph)
    reply = engine.execute(
        {
            "execute": "x-txgraph-transaction",
            "arguments": {
                "actions": [
                    {
                        "type": "x-txgraph-blockdev-add",
                        "data": {"driver": "null-co", "node-name": "new"},
                    },
                    {"type": "x-txgraph-blockdev-del", "data": {"node-name": "disk"}},
                ]
            },
        }
    )
    assert "return" in reply, reply
    recorder(0, "after", session.graph)
    shot = recorder.steps[0]
    delta = changes(shot.before, shot.after)
    assert delta.nodes_added == {"new"} and delta.nodes_removed == {"disk"}
    before = to_dot(shot.before, highlight=delta, side="before")
    after = to_dot(shot.after, highlight=delta, side="after")
    assert f'"disk" [shape=box style="rounded" color="{REMOVED}"' in before
    assert f'"new" [shape=box style="rounded" color="{ADDED}"' in after
    assert REMOVED not in after and ADDED not in before


def test_a_changed_node_is_orange() -> None:
    engine = _engine(_add({"driver": "null-co", "node-name": "n0"}))
    session = engine.context.session
    before = picture_of(session.graph)
    reply = engine.execute(
        {
            "execute": "blockdev-reopen",
            "arguments": {"options": [{"driver": "null-co", "node-name": "n0", "read-only": True}]},
        }
    )
    assert "return" in reply, reply
    after = picture_of(session.graph)
    delta = changes(before, after)
    assert delta.nodes_changed == {"n0"} and not delta.nodes_added
    assert f'color="{CHANGED}"' in to_dot(after, highlight=delta)
