"""Providers: where a credential's network resources come from (DESIGN section 3).

The server half allocates and frees resources inside the verb's store transaction; the node
half (DRCC) configures a node for an accessing job. ``make_provider`` picks one from config.
"""

from __future__ import annotations

from collections.abc import Mapping

from drc.core.ports import Provider


def make_provider(name: str, settings: Mapping[str, object]) -> Provider:
    if name == "pool":
        from drc.providers.pool import PoolProvider

        return PoolProvider.from_settings(settings)
    if name == "alps":
        from drc.providers.alps import AlpsProvider

        return AlpsProvider.from_settings(settings)
    if name == "slingshot":
        from drc.providers.slingshot import SlingshotProvider

        return SlingshotProvider.from_settings(settings)
    raise ValueError(f"unknown provider {name!r} (known: pool, alps, slingshot)")
