"""One dispatch path for every transport: what happens to a call between its frame and its answer.

The bus exporter (:mod:`drc.bus.exporter`) and the DRC link (:mod:`drc.server.link`) only frame
messages, say who is calling (from their transport) and encode the :class:`DrcError` they are
handed. Everything else happens here, the same way for both, so a verb behaves the same
whichever transport carried it:

1. the arguments are checked against the declared signature (:func:`drc.export.check_args`);
2. the verb runs: on the group commit's store thread when one is given and the verb is not
   declared ``on_loop`` (``grouped`` verbs share a transaction, others run alone), else at once.
   A verb that writes the store (``takes_unit``) is handed its :class:`drc.core.ports.Unit`:
   the request to record (the link's request id, made a record by ``recorded``) and the batch
   the group commit runs it in, which it passes on to the core's transaction;
3. a retried request whose first run committed is answered from the store's record (the link
   exporter's ``recorded`` hook answers it with :func:`drc.server.link_exporter.replay`);
4. the answer is checked against the declared out-signature;
5. a failure becomes a :class:`DrcError` through :func:`as_drc_error`: a refusal as it is, any
   other exception (a bug) as ``CRED_EXTERNAL_FAILURE`` naming the verb (never EINVAL, which
   callers would retry forever);
6. refusals are audited (``audit``) and every call that ran is told to ``observer`` (metrics).

Transport-free: no D-Bus library, no SQL. The answer is a list, or a future of one (a verb
waiting for its group commit, or a parked long poll): no task per waiting call.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from drc.core.errors import Code, DrcError
from drc.core.ports import Request, Unit
from drc.export import ExportedMethod, PeerCredentials, check_args, check_result, merged_table
from drc.export import out_list as _out_list

log = logging.getLogger("drc.dispatch")

#: ``observer(transport, verb, seconds, error)``: one call per request that ran.
Observer = Callable[[str, str, float, "BaseException | None"], None]
#: ``audit(peer, verb, args, error)``: one call per refusal.
Audit = Callable[[PeerCredentials, ExportedMethod, list[Any], DrcError], None]
#: ``then(out, error)``: how a waiting call is answered when the transport asks for a callback.
Then = Callable[["list[Any] | None", "DrcError | None"], None]
#: ``run(call, told)`` of a group commit: a future of ``call(batch)``'s result; ``told(future)``
#: is called as it is set, in the same loop callback (no done-callback turn).
Submit = Callable[
    [Callable[[Any], Any], Callable[["asyncio.Future[Any]"], None]], "asyncio.Future[Any]"
]
#: ``recorded(request, verb, args, run)``: ``run(record)`` with the store's record of the
#: transport's request id, answering a retry of a committed request (the link's hook).
Recorded = Callable[[Any, ExportedMethod, list[Any], Callable[[Request], Any]], Any]


def as_drc_error(verb: str, exc: BaseException) -> DrcError:
    """The one error mapping: a refusal stays itself, anything else is an internal error."""
    if isinstance(exc, DrcError):
        return exc
    return DrcError(Code.CRED_EXTERNAL_FAILURE, f"internal error in {verb}: {exc}")


def shares_commit(exported: ExportedMethod, frees_may_share: bool) -> bool:
    """The one grouping policy, for every transport: a verb declared ``grouped`` shares its
    group's transaction; one that ``frees`` does too when freeing runs no external cleanup
    after the commit (``frees_may_share``: the cookie pool, not ALPS); any other runs alone."""
    return exported.grouped or (exported.frees and frees_may_share)


class Dispatcher:
    """Serves the ``@method`` tables of ``services`` for one transport (``transport`` names it
    for the metrics: ``dbus``, ``link``).

    ``group`` (a :class:`drc.server.group.GroupCommit`) takes the verbs that touch the store
    off the event loop; ``recorded`` (:data:`Recorded`) makes a call's request id the record a
    verb's unit carries and answers a committed retry (the link's exactly-once requests).
    """

    def __init__(
        self,
        *services: object,
        transport: str,
        group: Any = None,
        audit: Audit | None = None,
        observer: Observer | None = None,
        recorded: Recorded | None = None,
        frees_may_share: bool = False,
    ) -> None:
        routes = merged_table(*services)
        self.methods: Mapping[str, ExportedMethod] = MappingProxyType(
            {name: m for name, (_, m) in routes.items()}
        )
        self._owners = {name: owner for name, (owner, _) in routes.items()}
        self.transport = transport
        self.group = group
        self.audit = audit
        self.observer = observer
        self.recorded = recorded
        self.frees_may_share = frees_may_share
        self._tasks: set[asyncio.Task[Any]] = set()

    def dispatch(
        self,
        peer: PeerCredentials,
        name: str,
        args: list[Any],
        request: str | None = None,
        *,
        then: Then | None = None,
    ) -> list[Any] | asyncio.Future[Any]:
        """The checked answer of verb ``name``, or a future of it; raises (or fails the future
        with) a :class:`DrcError` only. ``request`` is the transport's id of an exactly-once
        request (the link's ``rid``), recorded with the verb's change.

        With ``then``, a verb that must wait is answered by ``then(out, None)`` or
        ``then(None, error)`` as its own future is set (from the group commit's callback
        that sets it, else the future's done callback), and that future is returned (a
        transport whose caller went cancels it: ``then`` is not called): no second future,
        and no extra event-loop turn per call."""
        exported = self.methods.get(name)
        if exported is None:
            raise DrcError(Code.EPROTO, f"no method {name[:64]!r} is served here")
        try:
            check_args(exported, args)
        except DrcError as refused:
            self._audit(peer, exported, args, refused)
            raise
        started = time.perf_counter()
        owner = self._owners[name]
        func = exported.func
        # a verb declaring no replay answer is idempotent: a request id it came with is moot
        recorded = self.recorded if request is not None and exported.replay is not None else None

        def call(batch: Any = None) -> Any:
            """Run the verb, handing a store-writing one its unit (request record, batch)."""
            if not exported.takes_unit:
                return func(owner, peer, *args)
            if recorded is None:
                return func(owner, peer, *args, unit=Unit(None, batch))
            return recorded(
                request,
                exported,
                args,
                lambda record: func(owner, peer, *args, unit=Unit(record, batch)),
            )

        group = self.group
        try:
            if group is not None and not exported.on_loop and not exported.is_coroutine:
                grouped = shares_commit(exported, self.frees_may_share)
                run: Submit = group.submit if grouped else group.alone
                answer = _Answer(self, peer, exported, args, started, True, then)
                verb = run(lambda batch: _out_list(exported, call(batch)), answer.settle)
                return answer.follow(verb, told=True)
            result = call()
            if isinstance(result, asyncio.Future) or inspect.isawaitable(result):
                return self._later(peer, exported, args, started, result, False, then)
            return self._settle(peer, exported, args, started, result, None, listed=False)
        except Exception as exc:
            return self._settle(peer, exported, args, started, None, exc, listed=False)

    def cancel(self) -> None:
        """Cancel the tasks of coroutine verbs still running (the transport stopped)."""
        for task in list(self._tasks):
            task.cancel()

    # -- answering -------------------------------------------------------------------------

    def _later(
        self,
        peer: PeerCredentials,
        exported: ExportedMethod,
        args: list[Any],
        started: float,
        pending: Any,
        listed: bool,
        then: Then | None,
    ) -> asyncio.Future[Any]:
        """A future of the checked answer, or when ``then`` hears it (:class:`_Answer`) the
        verb's own future, to cancel."""
        if not isinstance(pending, asyncio.Future):
            pending = asyncio.ensure_future(pending)
            self._tasks.add(pending)
            pending.add_done_callback(self._tasks.discard)
        answer = _Answer(self, peer, exported, args, started, listed, then)
        told = isinstance(pending, Prompt) and pending.then(answer.settle)
        return answer.follow(pending, told=told)

    def _settle(
        self,
        peer: PeerCredentials,
        exported: ExportedMethod,
        args: list[Any],
        started: float,
        result: Any,
        error: BaseException | None,
        *,
        listed: bool,
    ) -> list[Any]:
        """The checked answer, or raise its DrcError; the observer and the audit hear of it."""
        if error is None:
            try:
                out = result if listed else _out_list(exported, result)
                out = check_result(exported, out)
            except Exception as exc:
                error = exc
        if error is None:
            self._observe(exported, started, None)
            return out
        refused = as_drc_error(exported.name, error)
        if refused is not error:
            log.error(
                "internal error in %s (caller uid %d, %s)",
                exported.name,
                peer.uid,
                peer.sender,
                exc_info=(type(error), error, error.__traceback__),
            )
        else:
            self._audit(peer, exported, args, refused)
        self._observe(exported, started, error)  # metrics tell refusals from internal errors
        raise refused

    def _observe(
        self, exported: ExportedMethod, started: float, error: BaseException | None
    ) -> None:
        if self.observer is not None:
            self.observer(self.transport, exported.name, time.perf_counter() - started, error)

    def _audit(
        self, peer: PeerCredentials, exported: ExportedMethod, args: list[Any], error: DrcError
    ) -> None:
        if self.audit is None:
            return
        try:
            self.audit(peer, exported, list(args), error)
        except Exception:
            log.exception("auditing a refused %s failed", exported.name)


class Prompt(asyncio.Future):  # type: ignore[type-arg]
    """A verb's future that answers its caller in the very callback that sets it: the
    dispatcher is told right after the result is set (:meth:`then`), not by a done callback,
    which costs the answer one more event-loop turn. DRCC answers a cache miss so, in the
    turn that reads DRCS's answer. (The group commit's futures are told by its ``then``.)"""

    _told: Callable[[asyncio.Future[Any]], None] | None = None

    def then(self, told: Callable[[asyncio.Future[Any]], None]) -> bool:
        """Have ``told(self)`` called right after the result or exception is set; False if
        it is set already (nothing will call it)."""
        if self.done():
            return False
        self._told = told
        return True

    def set_result(self, result: Any) -> None:
        super().set_result(result)
        self._tell()

    def set_exception(self, exception: type | BaseException) -> None:
        super().set_exception(exception)
        self._tell()

    def _tell(self) -> None:
        told, self._told = self._told, None
        if told is not None:
            try:
                told(self)
            except Exception:  # the transport's trouble: not the setter's to hear
                log.exception("answering a call failed")


class _Answer:
    """The checked answer to a verb's future, which it cancels if the answer is cancelled (the
    node went: its parked poll goes too). One small object per waiting call (10,000 parked
    polls on a large cluster); its callbacks need no context of their own."""

    __slots__ = (
        "answer",
        "args",
        "dispatcher",
        "exported",
        "listed",
        "peer",
        "started",
        "then",
        "verb",
    )
    _context = contextvars.Context()

    def __init__(
        self,
        dispatcher: Dispatcher,
        peer: PeerCredentials,
        exported: ExportedMethod,
        args: list[Any],
        started: float,
        listed: bool,
        then: Then | None,
    ) -> None:
        self.dispatcher, self.peer, self.exported, self.args = dispatcher, peer, exported, args
        self.started, self.listed, self.then = started, listed, then
        self.answer: asyncio.Future[list[Any]] | None = None

    def follow(self, verb: asyncio.Future[Any], told: bool = False) -> asyncio.Future[Any]:
        """Answer from ``verb``: its done callback calls :meth:`settle`, unless whoever sets
        it calls that itself (``told``: the group commit). The future to hand the transport:
        the verb's with ``then`` (to cancel), else the answer's."""
        self.verb = verb
        if self.then is None:
            self.answer = verb.get_loop().create_future()
            self.answer.add_done_callback(self.cancelled, context=self._context)
        if not told:
            verb.add_done_callback(self.settle, context=self._context)
        return verb if self.answer is None else self.answer

    def settle(self, verb: asyncio.Future[Any]) -> None:
        answer = self.answer
        if verb.cancelled():
            if answer is not None:
                answer.cancel()
            return  # the transport stopped: nobody to answer
        if answer is not None and answer.done():
            return
        error = verb.exception()
        result = None if error is not None else verb.result()
        try:
            out = self.dispatcher._settle(
                self.peer,
                self.exported,
                self.args,
                self.started,
                result,
                error,
                listed=self.listed,
            )
        except DrcError as refused:
            if answer is None:
                self.then(None, refused)  # type: ignore[misc]
            else:
                answer.set_exception(refused)
            return
        if answer is None:
            self.then(out, None)  # type: ignore[misc]
        else:
            answer.set_result(out)

    def cancelled(self, answer: asyncio.Future[list[Any]]) -> None:
        if answer.cancelled():
            self.verb.cancel()


__all__ = ["Dispatcher", "Prompt", "as_drc_error", "shares_commit"]
