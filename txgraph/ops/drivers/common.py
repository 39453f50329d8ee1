"""What every driver's open and reopen rules share: the function types and the open helpers.

``runtime_open`` is the step every ``bdrv_open`` of txgraph ends with: the node's
driver object is prepared through the transaction's RuntimeStage (so open errors
come from real files and real headers, while no request can reach the new node
before the commit), and what the driver reports about the image is kept in the
model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from txgraph.errors import IOFailure, OpenError, TxgraphError
from txgraph.io.driver import ImageInfo
from txgraph.model.drivers import DriverSpec
from txgraph.model.node import BlockNode, OpenFlag

if TYPE_CHECKING:
    # The opener, the session and the transaction call into this package; their
    # types are needed for annotations only.
    from txgraph.ops.inherit import OptionSet
    from txgraph.ops.open import Opener
    from txgraph.ops.reopen_queue import ReopenEntry
    from txgraph.ops.session import Session
    from txgraph.ops.undo_log import Transaction

__all__ = ["OpenFn", "ReopenFn", "consume", "runtime_open", "image_dict", "qemu_opts_string"]

#: a driver's ``bdrv_open``: consume its options, open its children, prepare its object
OpenFn = Callable[["Opener", BlockNode, DriverSpec, "OptionSet"], None]
#: a driver's ``bdrv_reopen_prepare``: ``(tx, session, node, entry, changed, rest)``, where
#: ``changed`` holds the options of the spec's ``changeable_opts`` the reopen gave (already
#: taken out of ``rest``) and ``rest`` is what is left for the "cannot change" check
ReopenFn = Callable[
    ["Transaction", "Session", BlockNode, "ReopenEntry", dict[str, Any], dict[str, Any]], None
]


def consume(work: OptionSet, spec: DriverSpec) -> dict[str, Any]:
    """Take every option the driver understands out of the working set."""
    taken = {k: v for k, v in work.values.items() if spec.accepts_option(k)}
    for key in taken:
        work.discard(key)
    return taken


def runtime_open(
    opener: Opener,
    node: BlockNode,
    children: dict[str, str],
    extra: Mapping[str, Any] | None = None,
) -> ImageInfo:
    """Prepare the node's driver object and record what it reports about the image.

    The driver gets the resolved common settings typed (flags, detect-zeroes), not
    the strings blockdev-add stored in the options; ``probed`` is typed too: the
    data plane enforces the probed-raw rule (raw_co_pwritev, CVE-2008-2004) from it.
    ``extra`` carries what only the driver sees (a secret reference), never the model.
    Returns that report (a driver's open reads the header's facts from it).
    """
    options = {**node.options, **node.runtime_options(), **(extra or {})}
    try:
        info = opener.rt.open(
            node.name, node.driver, options, children, node.read_only, probed=node.probed
        )
    except IOFailure as err:
        # The node opened but its size could not be determined (bdrv_open_driver).
        raise OpenError(f"Could not refresh total sector count: {err.desc}") from err
    except TxgraphError:
        raise
    except OSError as err:  # a driver that let an OS error escape: still QEMU-shaped text
        raise OpenError(f"Could not open '{node.filename}': {err.strerror}") from err
    if opener.rt.read_only(node.name) and not node.read_only:
        # auto-read-only: the driver fell back to a read-only open (bdrv_apply_auto_read_only)
        node.flags &= ~OpenFlag.RDWR
    node.image = image_dict(info)
    if info.backing_file:
        node.backing_file = info.backing_file
        node.auto_backing_file = info.backing_file
    if info.backing_format:
        node.backing_format = info.backing_format
    return info


def image_dict(info: Any) -> dict[str, Any]:
    """The ``image`` member the model keeps from what the data plane reported at open."""
    image: dict[str, Any] = {"virtual-size": info.virtual_size, "format": info.format}
    if info.actual_size is not None:
        image["actual-size"] = info.actual_size
    if info.cluster_size:
        image["cluster-size"] = info.cluster_size
    if info.format_specific is not None:
        image["format-specific"] = info.format_specific
    image["dirty-flag"] = info.dirty
    image.update(info.extra)
    return image


def qemu_opts_string(value: Any) -> str:
    """How a value reads back from QemuOpts (``qemu_opts_to_qdict``)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
