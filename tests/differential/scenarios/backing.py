"""Backing files from image headers, chains, data-file images (options §3.6, §8.4)."""

from __future__ import annotations

from pathlib import Path

from tests.differential.harness import SetupAction
from tests.differential.scenarios._common import (
    Call,
    MkDir,
    add,
    delete,
    fnode,
    null,
    qcow2_img,
    qnodes,
    raw_img,
    sc,
    strip_backing_format,
)

T = "backing"


def _rm(workdir: Path, path: str) -> None:
    (workdir / path).unlink()


def _chain(n: int) -> list[SetupAction]:
    setup = [qcow2_img("l0.qcow2", "2M")]
    for i in range(1, n):
        setup.append(qcow2_img(f"l{i}.qcow2", "2M", backing=f"l{i - 1}.qcow2"))
    return setup


SCENARIOS = [
    sc(
        "bk_header_relative",
        [
            add({"driver": "qcow2", "node-name": "t", "file": fnode("t.qcow2", "tf")}),
        ],
        setup=[qcow2_img("b.qcow2"), qcow2_img("t.qcow2", backing="b.qcow2")],
        theme=T,
    ),
    sc(
        "bk_header_relative_subdir",
        [
            add({"driver": "qcow2", "node-name": "t", "file": fnode("sub/t.qcow2")}),
            add({"driver": "qcow2", "node-name": "u", "read-only": True, "file": fnode("u.qcow2")}),
        ],
        setup=[
            MkDir("sub"),
            qcow2_img("sub/b.qcow2"),
            qcow2_img("sub/t.qcow2", backing="b.qcow2"),
            qcow2_img("u.qcow2", backing="sub/b.qcow2"),
        ],
        theme=T,
    ),
    sc(
        "bk_header_absolute",
        [
            add({"driver": "qcow2", "node-name": "t", "file": fnode("t.qcow2", "tf")}),
        ],
        setup=[qcow2_img("b.qcow2"), qcow2_img("t.qcow2", backing="{dir}/b.qcow2")],
        theme=T,
    ),
    sc(
        "bk_header_no_format_probed",
        [
            add({"driver": "qcow2", "node-name": "t", "file": fnode("t.qcow2")}),
            add({"driver": "qcow2", "node-name": "u", "file": fnode("u.qcow2")}),
        ],
        setup=[
            qcow2_img("b.qcow2"),
            raw_img("r.raw"),
            qcow2_img("t.qcow2", backing="b.qcow2"),
            Call(strip_backing_format, ("t.qcow2",)),
            qcow2_img("u.qcow2", backing="r.raw", fmt="raw"),
            Call(strip_backing_format, ("u.qcow2",)),
        ],
        theme=T,
        doc="no backing format in the header: the backing is probed",
    ),
    sc(
        "bk_header_format_mismatch",
        [
            add({"driver": "qcow2", "node-name": "t", "file": fnode("t.qcow2")}),
            add({"driver": "qcow2", "node-name": "u", "file": fnode("u.qcow2")}),
        ],
        setup=[
            qcow2_img("b.qcow2"),
            raw_img("r.raw"),
            qcow2_img("t.qcow2", backing="b.qcow2", fmt="raw", unsafe=True),
            qcow2_img("u.qcow2", backing="r.raw", fmt="qcow2", unsafe=True),
        ],
        theme=T,
        doc="header says raw for a qcow2 backing (opened as raw) and qcow2 for a raw one (fails)",
    ),
    sc(
        "bk_header_missing_backing",
        [
            add({"driver": "qcow2", "node-name": "t", "file": fnode("t.qcow2")}),
            add({"driver": "qcow2", "node-name": "t", "file": fnode("t.qcow2"), "backing": None}),
            add({"driver": "qcow2", "node-name": "t2", "file": fnode("a.qcow2")}),
        ],
        setup=[
            qcow2_img("t.qcow2", backing="gone.qcow2", unsafe=True),
            qcow2_img("a.qcow2", backing="{dir}/nodir/gone.qcow2", unsafe=True),
        ],
        theme=T,
    ),
    sc(
        "bk_backing_null",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "t",
                    "backing": None,
                    "file": fnode("t.qcow2", "tf"),
                }
            ),
            add({"driver": "qcow2", "node-name": "u", "backing": None, "file": fnode("b.qcow2")}),
        ],
        setup=[qcow2_img("b.qcow2"), qcow2_img("t.qcow2", backing="b.qcow2")],
        theme=T,
        doc="backing: null ignores the header; the filename becomes json:{... backing: null}",
    ),
    sc(
        "bk_backing_reference",
        [
            add({"driver": "qcow2", "node-name": "b", "file": fnode("b.qcow2", "bf")}),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "t",
                    "backing": "b",
                    "file": fnode("t.qcow2", "tf"),
                }
            ),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "o",
                    "backing": "b",
                    "file": fnode("o.qcow2", "of"),
                }
            ),
        ],
        setup=[qcow2_img("b.qcow2"), qcow2_img("t.qcow2", backing="b.qcow2"), qcow2_img("o.qcow2")],
        theme=T,
        doc="a referenced backing (rw) shared by two overlays",
    ),
    sc(
        "bk_backing_reference_other_node",
        [
            add(null("n", size=1048576)),
            add({"driver": "qcow2", "node-name": "t", "backing": "n", "file": fnode("t.qcow2")}),
        ],
        setup=[qcow2_img("b.qcow2"), qcow2_img("t.qcow2", backing="b.qcow2")],
        theme=T,
    ),
    sc(
        "bk_backing_dict_with_filename",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "t",
                    "file": fnode("t.qcow2"),
                    "backing": {
                        "driver": "qcow2",
                        "node-name": "b",
                        "file": fnode("other.qcow2", "bf"),
                    },
                }
            ),
        ],
        setup=[
            qcow2_img("b.qcow2"),
            qcow2_img("other.qcow2"),
            qcow2_img("t.qcow2", backing="b.qcow2"),
        ],
        theme=T,
        doc="a backing dict with file.filename ignores the header name",
    ),
    sc(
        "bk_backing_dict_file_reference",
        [
            add(fnode("b.qcow2", "bf")),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "t",
                    "file": fnode("t.qcow2"),
                    "backing": {"driver": "qcow2", "node-name": "b", "file": "bf"},
                }
            ),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "o",
                    "file": fnode("o.qcow2"),
                    "backing": {"driver": "qcow2", "node-name": "b", "file": "bf"},
                }
            ),
        ],
        setup=[qcow2_img("b.qcow2"), qcow2_img("t.qcow2", backing="b.qcow2"), qcow2_img("o.qcow2")],
        theme=T,
        doc="backing dict without file.filename + header name: the reference cannot be used",
    ),
    sc(
        "bk_backing_dict_partial",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "t",
                    "file": fnode("t.qcow2"),
                    "backing": {"node-name": "b", "cache": {"direct": True}},
                }
            ),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "u",
                    "file": fnode("u.qcow2"),
                    "backing": {"driver": "qcow2", "node-name": "ub"},
                }
            ),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "v",
                    "file": fnode("u.qcow2"),
                    "backing": {"driver": "raw", "node-name": "vb"},
                }
            ),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "w",
                    "file": fnode("t.qcow2"),
                    "backing": {
                        "driver": "raw",
                        "node-name": "wb",
                        "file": fnode("b.qcow2", "wbf"),
                    },
                }
            ),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "x",
                    "read-only": True,
                    "file": fnode("u.qcow2"),
                    "backing": {
                        "driver": "raw",
                        "node-name": "xb",
                        "read-only": False,
                        "file": fnode("r.raw", "xbf"),
                    },
                }
            ),
        ],
        setup=[
            qcow2_img("b.qcow2"),
            qcow2_img("t.qcow2", backing="b.qcow2"),
            qcow2_img("u.qcow2"),
            raw_img("r.raw"),
        ],
        theme=T,
        doc="partial backing dicts merge over the header name; none without a header",
    ),
    sc(
        "bk_chain_10",
        [
            add({"driver": "qcow2", "node-name": "top", "file": fnode("l9.qcow2", "topf")}),
            qnodes(False),
            delete("top"),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "mid",
                    "read-only": True,
                    "file": fnode("l5.qcow2"),
                }
            ),
        ],
        setup=_chain(10),
        theme=T,
    ),
    sc(
        "bk_chain_mixed",
        [
            add({"driver": "qcow2", "node-name": "t", "file": fnode("t.qcow2")}),
            qnodes(False),
        ],
        setup=[
            raw_img("base.raw", "2M"),
            qcow2_img("m.qcow2", "2M", backing="base.raw", fmt="raw"),
            qcow2_img("t.qcow2", "4M", backing="m.qcow2"),
        ],
        theme=T,
    ),
    sc(
        "bk_backing_on_non_cow_driver",
        [
            add({"driver": "raw", "node-name": "r", "file": fnode("a.raw"), "backing": None}),
            add(
                {
                    "driver": "throttle",
                    "node-name": "t",
                    "throttle-group": "x",
                    "file": null(),
                    "backing": "x",
                }
            ),
            add({"driver": "null-co", "node-name": "n", "backing": None}),
        ],
        setup=[raw_img("a.raw")],
        theme=T,
    ),
    sc(
        "bk_json_backing_bad",
        [
            add({"driver": "qcow2", "node-name": "a", "file": fnode("a.qcow2")}),
            add({"driver": "qcow2", "node-name": "b", "file": fnode("b.qcow2")}),
            add({"driver": "qcow2", "node-name": "c", "file": fnode("c.qcow2")}),
        ],
        setup=[
            raw_img("r.raw"),
            qcow2_img("a.qcow2", backing='json:{"driver":"raw",', fmt="raw", unsafe=True),
            qcow2_img("b.qcow2", backing="json:[1,2]", fmt="raw", unsafe=True),
            qcow2_img(
                "c.qcow2",
                backing='json:{"driver":"raw","bogus":1,"file":{"driver":"file",'
                '"filename":"{dir}/r.raw"}}',
                fmt="raw",
                unsafe=True,
            ),
        ],
        theme=T,
    ),
    sc(
        "bk_data_file_from_header",
        [
            add({"driver": "qcow2", "node-name": "d0", "file": fnode("d.qcow2", "d0f")}),
        ],
        setup=[qcow2_img("d.qcow2", opts="data_file={dir}/d.raw")],
        theme=T,
    ),
    sc(
        "bk_data_file_explicit",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "d0",
                    "file": fnode("d.qcow2", "d0f"),
                    "data-file": fnode("d.raw", "d0d"),
                }
            ),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "d1",
                    "read-only": True,
                    "file": fnode("e.qcow2", "d1f"),
                    "data-file": fnode("e.raw", "d1d"),
                }
            ),
        ],
        setup=[
            qcow2_img("d.qcow2", opts="data_file=d.raw"),
            qcow2_img("e.qcow2", opts="data_file=e.raw,data_file_raw=on"),
        ],
        theme=T,
    ),
    sc(
        "bk_data_file_errors",
        [
            add(
                {
                    "driver": "qcow2",
                    "node-name": "p",
                    "file": fnode("plain.qcow2"),
                    "data-file": fnode("x.raw"),
                }
            ),
            add({"driver": "qcow2", "node-name": "m", "file": fnode("m.qcow2")}),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "d",
                    "file": fnode("d.qcow2"),
                    "data-file": "nothere",
                }
            ),
            add(fnode("dd.raw", "ddf")),
            add(
                {"driver": "qcow2", "node-name": "d", "file": fnode("d.qcow2"), "data-file": "ddf"}
            ),
            delete("ddf"),
        ],
        setup=[
            qcow2_img("plain.qcow2"),
            raw_img("x.raw"),
            qcow2_img("m.qcow2", opts="data_file=md.raw"),
            qcow2_img("d.qcow2", opts="data_file=dd.raw"),
            Call(_rm, ("md.raw",)),
        ],
        theme=T,
    ),
    sc(
        "bk_data_file_with_backing",
        [
            add({"driver": "qcow2", "node-name": "t", "file": fnode("t.qcow2")}),
        ],
        setup=[
            qcow2_img("b.qcow2"),
            qcow2_img("t.qcow2", backing="b.qcow2", opts="data_file=t.raw"),
        ],
        theme=T,
    ),
    sc(
        "bk_backing_empty_and_auto_reference",
        [
            add({"driver": "qcow2", "node-name": "t", "file": fnode("t.qcow2", "tf")}),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "o",
                    "backing": "{#block1}",
                    "file": fnode("o.qcow2", "of"),
                }
            ),
            add(
                {"driver": "qcow2", "node-name": "e", "backing": "", "file": fnode("e.qcow2", "ef")}
            ),
            delete("t"),
            delete("o"),
        ],
        setup=[
            qcow2_img("b.qcow2"),
            qcow2_img("t.qcow2", backing="b.qcow2"),
            qcow2_img("o.qcow2"),
            qcow2_img("e.qcow2", backing="b.qcow2"),
        ],
        theme=T,
        doc="an auto-named header backing shared by reference; backing '' is not null over QMP",
    ),
    sc(
        "bk_filename_option_not_parsed",
        [
            add({"driver": "file", "node-name": "j", "filename": 'json:{"driver":"null-co"}'}),
            add({"driver": "file", "node-name": "n", "filename": "null-co://"}),
            add({"driver": "file", "node-name": "p", "filename": "file:{dir}/a.raw"}),
            add({"driver": "qcow2", "node-name": "q", "file": fnode("q.qcow2")}),
        ],
        setup=[
            raw_img("a.raw"),
            qcow2_img("q.qcow2", backing="file:{dir}/a.raw", fmt="raw", unsafe=True),
        ],
        theme=T,
        doc="filename options are literal paths; a header backing name gets prefix parsing",
    ),
]
