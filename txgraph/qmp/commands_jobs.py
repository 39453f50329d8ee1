"""The QMP job commands: ``block-stream``, ``query-jobs``, the ``job-*`` and ``block-job-*`` verbs.

``job-*`` (job-qmp.c) find the job by ID and answer ``Job not found`` as a
GenericError; ``block-job-*`` (blockdev.c) answer ``Block job '<id>' not
found`` with class DeviceNotActive, and ``block-job-cancel`` refuses a
non-forced cancel of a paused job. ``job-cancel`` always forces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from txgraph.errors import BlockError, QAPIError
from txgraph.jobs.backup import blockdev_backup
from txgraph.jobs.commit import block_commit
from txgraph.jobs.job import Job
from txgraph.jobs.manager import JobManager, manager_of
from txgraph.jobs.mirror import blockdev_mirror
from txgraph.jobs.stream import block_stream
from txgraph.qmp.command_table import CommandContext, command

__all__: list[str] = []


@command("block-stream")
def _block_stream(ctx: CommandContext, args: dict[str, Any]) -> Any:
    block_stream(ctx.session, args)
    return {}


@command("block-commit")
def _block_commit(ctx: CommandContext, args: dict[str, Any]) -> Any:
    block_commit(ctx.session, args)
    return {}


@command("blockdev-mirror")
def _blockdev_mirror(ctx: CommandContext, args: dict[str, Any]) -> Any:
    blockdev_mirror(ctx.session, args)
    return {}


@command("blockdev-backup")
def _blockdev_backup(ctx: CommandContext, args: dict[str, Any]) -> Any:
    blockdev_backup(ctx.session, args)
    return {}


@command("x-txgraph-wait-job")
def _x_wait_job(ctx: CommandContext, args: dict[str, Any]) -> Any:
    """A plan's wait point: ``{"job": ID, "event": POINT, "timeout": SECONDS}`` returns once
    the job reached POINT (``ready``, ``completed``, ``pending``, ``null``...)."""
    timeout = args.get("timeout", 60)
    if timeout <= 0:
        raise QAPIError("Parameter 'timeout' expects a positive number")
    manager_of(ctx.session).wait_for(args["job"], args["event"], float(timeout))
    return {}


@command("query-jobs")
def _query_jobs(ctx: CommandContext, args: dict[str, Any]) -> Any:
    return manager_of(ctx.session).query_jobs()


@command("query-block-jobs")
def _query_block_jobs(ctx: CommandContext, args: dict[str, Any]) -> Any:
    return manager_of(ctx.session).query_block_jobs()


# -- job-* and block-job-* ---------------------------------------------------------------
def _verb(name: str, key: str, block: bool, act: Callable[[JobManager, Job], None]) -> None:
    """Register ``name``: find the job by ``args[key]`` (``job-*``: GenericError ``Job not
    found``; ``block-job-*``: DeviceNotActive), then apply the verb."""

    def handler(ctx: CommandContext, args: dict[str, Any]) -> Any:
        manager = manager_of(ctx.session)
        find = manager.find_block_job if block else manager.find_job
        act(manager, find(args[key]))
        return {}

    handler.__name__ = handler.__qualname__ = "_" + name.replace("-", "_")
    command(name)(handler)


for _prefix, _key, _block in (("job", "id", False), ("block-job", "device", True)):
    _verb(f"{_prefix}-pause", _key, _block, JobManager.user_pause)
    _verb(f"{_prefix}-resume", _key, _block, JobManager.user_resume)
    _verb(f"{_prefix}-complete", _key, _block, JobManager.complete)
    # block-job-finalize and block-job-dismiss take "id" too (blockdev.c)
    _verb(f"{_prefix}-finalize", "id", _block, JobManager.finalize)
    _verb(f"{_prefix}-dismiss", "id", _block, JobManager.dismiss)
# job-cancel always forces (job-qmp.c); block-job-cancel below takes ``force``
_verb("job-cancel", "id", False, lambda m, j: m.user_cancel(j, True))


@command("block-job-set-speed")
def _block_job_set_speed(ctx: CommandContext, args: dict[str, Any]) -> Any:
    manager = manager_of(ctx.session)
    manager.set_speed(manager.find_block_job(args["device"]), args["speed"])
    return {}


@command("block-job-cancel")
def _block_job_cancel(ctx: CommandContext, args: dict[str, Any]) -> Any:
    """``qmp_block_job_cancel``: a soft cancel of a user-paused job is refused."""
    manager = manager_of(ctx.session)
    device = args["device"]
    job = manager.find_block_job(device)
    force = bool(args.get("force", False))
    if job.user_paused and not force:
        raise BlockError(f"The block job for device '{device}' is currently paused")
    manager.user_cancel(job, force)
    return {}
