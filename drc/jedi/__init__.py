"""DRCJEDI: job expiration by reconciliation — DRCS's outstanding jobs minus the WLM's active ones.

The everyday path is event-driven (the SPANK ``job_epilog`` and the ALPS epilog tell DRCC "job J
ended"); ``drc-jedi reconcile`` covers the jobs whose end nobody heard (DRCS down, node lost). It
runs when DRCS starts and on demand, never in a loop.
"""

from drc.jedi.main import Reconciliation, reconcile, to_expire

__all__ = ["Reconciliation", "reconcile", "to_expire"]
