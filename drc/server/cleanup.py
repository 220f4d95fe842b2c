"""DRCS background task: retry external cleanups (ALPS pdomains) that failed.

Removing an external object happens after the freeing transaction commits; when it fails the
core keeps a pending-cleanup row with a backoff. ALPS tells nobody when a busy pdomain becomes
removable, so retrying is periodic by nature -- unlike job expiration, which stays
event-driven (epilog hooks, ``drc-jedi reconcile``). Only providers that declare
``ExternalObjects`` (:mod:`drc.core.ports`) get this task.
"""

from __future__ import annotations

import asyncio
import logging

from drc.core.service import CredentialService

log = logging.getLogger("drc.server")


def wants_cleanup_task(service: CredentialService) -> bool:
    return service.cleanup.enabled


async def retry_cleanups_forever(service: CredentialService, interval: float) -> None:
    """Every ``interval`` seconds, retry the due cleanups (in a thread: apmgr may be slow).

    Runs once at start, so removals a crash or an outage left pending are retried at once.
    """
    while True:
        try:
            done, failed = await asyncio.to_thread(service.retry_cleanups)
            if done or failed:
                log.info("external cleanups: %d done, %d still failing", done, failed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("external cleanup pass failed; retrying in %.0f s", interval)
        await asyncio.sleep(interval)
