"""Workload-manager adapters: pid -> job lookup (DRCC) and the active-job list (DRCJEDI).

``make_wlm(name, **settings)`` builds the adapter named in configuration: slurm, alps, none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drc.wlm.base import NoWlm, WlmAdapter, WlmError

if TYPE_CHECKING:
    from drc.config import Config

__all__ = ["NoWlm", "WlmAdapter", "WlmError", "make_wlm", "wlm_from_config"]


def make_wlm(name: str, **settings: Any) -> WlmAdapter:
    """The adapter for ``name`` ("slurm", "alps" or "none"), configured with ``settings``.

    Settings are the adapter's keyword arguments (for Slurm: ``scontrol``, ``squeue``,
    ``proc_root``, ``pidinfo_timeout``, ``squeue_timeout``, ``use_pyslurm``; for ALPS: ``apstat``,
    ``libjob``, ``timeout`` -- see ``drc.wlm.alps.alps_settings``). Unknown names raise
    ValueError so that a typo in configuration stops the daemon instead of silently running
    without job lookup.
    """
    key = name.strip().lower()
    if key == "none":
        if settings:
            raise ValueError(f"wlm 'none' takes no settings, got {sorted(settings)}")
        return NoWlm()
    if key == "slurm":
        # Imported here so that "none" never pays for (or depends on) the Slurm module.
        from drc.wlm.slurm import SlurmAdapter

        return SlurmAdapter(**settings)
    if key == "alps":
        from drc.wlm.alps import AlpsAdapter

        return AlpsAdapter(**settings)
    raise ValueError(f"unknown workload manager {name!r} (known: slurm, alps, none)")


def wlm_from_config(cfg: Config, name: str) -> WlmAdapter:
    """The adapter ``name`` configured from the config file's sections (the daemons' way)."""
    key = name.strip().lower()
    if key == "slurm":
        return make_wlm(
            "slurm",
            scontrol=cfg["node"]["scontrol"],
            squeue=cfg["jedi"]["squeue"],
            squeue_timeout=float(cfg["jedi"]["squeue_timeout"]),
            use_pyslurm=cfg["jedi"]["use_pyslurm"],
        )
    if key == "alps":
        from drc.wlm.alps import alps_settings

        return make_wlm("alps", **alps_settings(cfg["alps"]))
    return make_wlm(name)
