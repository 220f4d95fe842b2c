"""Workload-manager adapters: pid -> job lookup (DRCC) and the active-job list (DRCJEDI).

``make_wlm(name, **settings)`` builds the adapter named in configuration. ALPS comes later.
"""

from __future__ import annotations

from typing import Any

from drc.wlm.base import NoWlm, WlmAdapter, WlmError

__all__ = ["NoWlm", "WlmAdapter", "WlmError", "make_wlm"]


def make_wlm(name: str, **settings: Any) -> WlmAdapter:
    """The adapter for ``name`` ("slurm" or "none"), configured with ``settings``.

    Settings are the adapter's keyword arguments (for Slurm: ``scontrol``, ``squeue``,
    ``proc_root``, ``pidinfo_timeout``, ``squeue_timeout``, ``use_pyslurm``). Unknown names raise
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
    raise ValueError(f"unknown workload manager {name!r} (known: slurm, none)")
