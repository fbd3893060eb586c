"""The SDK-mode app: ``POST /v1/messages`` and ``/v1/chat/completions`` answered by an agent.

Per request: authenticate, read the body, turn it into the agent's prompt, wait (bounded)
for a free agent slot, then try pooled accounts in turn: each attempt runs one Claude
Code process with that account's credential. An account refused before the agent
produced output (a rate limit, say) is reported to the pool and the call moves on, as
in API mode; after output the client gets an error. A sibling task watches for
``http.disconnect`` and cancels the call, which kills the agent's process group; the
per-call deadline does the same. Every call is one :class:`RequestRecord` for the
observers (access log, metrics) and the pool sees every attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import anyio.abc

from ccrotate._accounts.model import Account, AccountKind
from ccrotate._asgi import (
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    api_path,
    read_body,
    send_bytes,
    serve_lifespan,
)
from ccrotate._exceptions import (
    NoAccountAvailable,
    RefreshError,
    TranslationError,
    UnknownAccount,
)
from ccrotate._pool.pool import AccountPool
from ccrotate._pool.strategy import SelectionContext
from ccrotate._pool.taxonomy import classify
from ccrotate._proxy.attempts import Refresher
from ccrotate._proxy.dialects.openai.translator import OpenAITranslator
from ccrotate._proxy.pipeline import Authenticator, refusal, watch_disconnect
from ccrotate._proxy.record import (
    Failover,
    Observer,
    RequestRecord,
    new_request_id,
    note_failover,
    notify_request,
)
from ccrotate._sdk.config import SDKConfig
from ccrotate._sdk.events import AgentError, AgentEvent, Failure, Result
from ccrotate._sdk.output import Answer, OpenAIDialect, error_response, usage_into
from ccrotate._sdk.prompt import AgentRequest, PromptError, parse_request
from ccrotate._sdk.sessions import Session, Sessions, dispose

__all__ = ["SDKApp", "sdk_available"]

log = logging.getLogger("ccrotate.sdk")

INSTALL_HINT = ("ccrotate: SDK mode needs the Claude Agent SDK, which is not installed: "
                "pip install 'ccrotate[sdk]'")
_SESSION_PATH = re.compile(r"/([A-Za-z0-9][A-Za-z0-9_-]{0,127})(/v1/.*)")
# What a failed model call of the agent means, when its result names no status.
_FAILURES = {"rate_limit": (429, "rate_limit_error"),
             "authentication_failed": (401, "authentication_error"),
             "billing_error": (400, "billing_error"),
             "invalid_request": (400, "invalid_request_error"),
             "server_error": (500, "api_error")}
_TYPE_OF_STATUS = {429: "rate_limit_error", 401: "authentication_error",
                   403: "permission_error", 529: "overloaded_error", 400: "invalid_request_error"}

Problem = tuple[int, str, str]
"""``(status, error type, message)`` of a failed attempt."""


def sdk_available() -> bool:
    """Whether the ``ccrotate[sdk]`` extra (``claude_agent_sdk``) is installed."""
    return importlib.util.find_spec("claude_agent_sdk") is not None


class _NoHeaders:
    # The agent talks to the upstream itself: its refusals reach us without headers.
    def get(self, key: str, /) -> str | None:
        return None


class SDKApp:
    """SDK mode as an ASGI app: mount it at ``/sdk``.

    Parameters:
        pool: the :class:`AccountPool` whose accounts run the agents.
        config: an :class:`SDKConfig`.
        refresher: keeps OAuth tokens fresh before an agent gets one.
        authenticate: ``headers -> bool``; refused requests get a 401.
        observers: receive a :class:`RequestRecord` per call (access log, metrics).
        translator: the :class:`OpenAITranslator` for ``/v1/chat/completions``.
        max_body_size: largest request body accepted (413 beyond).
        body_timeout: seconds a client has to send its body (408 beyond).

    Serves ``POST /v1/messages``, ``POST /v1/chat/completions`` and their
    ``/{session_id}/v1/...`` forms (a warm agent per session). Start it with
    ``async with app:`` or its lifespan; :class:`Rotator` runs it as a service.
    Without the ``ccrotate[sdk]`` extra it answers 501 naming the install command.
    """

    def __init__(self, pool: AccountPool, *, config: SDKConfig | None = None,
                 refresher: Refresher | None = None, authenticate: Authenticator | None = None,
                 observers: Sequence[Observer] = (), translator: OpenAITranslator | None = None,
                 max_body_size: int = 32 * 1024 * 1024, body_timeout: float | None = 60.0) -> None:
        self.pool = pool
        self.config = config or SDKConfig()
        self.refresher = refresher
        self.authenticate = authenticate
        self.observers: list[Observer] = list(observers)
        self.translator = translator or OpenAITranslator()
        self.max_body_size = max_body_size
        self.body_timeout = body_timeout
        self.slots = anyio.CapacityLimiter(self.config.max_concurrent)
        self.sessions = Sessions(self.config.session_ttl, self.config.max_concurrent)
        self._agent: ModuleType | None = None
        self._live: set[Any] = set()
        self._tg: anyio.abc.TaskGroup | None = None

    async def _load(self) -> ModuleType | None:
        # ~1 s of imports (the SDK pulls in mcp): in a thread, once, on the first SDK call,
        # so that starting the server (and every process that never serves /sdk) skips it.
        if self._agent is None and sdk_available():
            self._agent = await anyio.to_thread.run_sync(
                importlib.import_module, "ccrotate._sdk.agent")
        return self._agent

    async def __aenter__(self) -> SDKApp:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self.sessions.reap_forever)
        return self

    async def __aexit__(self, *exc: object) -> None:
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        await self.sessions.close_all()

    def agent_pids(self) -> list[int]:
        """Process ids of the agents alive now: running calls and warm sessions."""
        processes = [*self._live, *self.sessions.processes()]
        return sorted({p.pid for p in processes if p.pid is not None})

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Run as a :class:`Rotator` service: sessions expire; all close on cancel."""
        try:
            task_status.started()
            await self.sessions.reap_forever()
        finally:
            await self.sessions.close_all()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await serve_lifespan(self, receive, send)
            return
        if kind != "http":
            return
        path, session = api_path(scope), None
        if (match := _SESSION_PATH.fullmatch(path)) is not None:
            session, path = match[1], match[2]
        if path == "/" and scope["method"] in ("GET", "HEAD"):
            await send_bytes(send, 200, [(b"content-type", b"application/json")], b"{}")
            return
        openai = path == "/v1/chat/completions"
        if path != "/v1/messages" and not openai:
            await _send_error(send, 404, "not_found_error", f"ccrotate: no SDK route {path}",
                              openai=False)
            return
        if scope["method"] != "POST":
            await _send_error(send, 405, "invalid_request_error",
                              f"ccrotate: {path} accepts POST only", openai=openai)
            return
        record = RequestRecord(request_id=new_request_id(), started_at=time.time(),
                               route="sdk_chat_completions" if openai else "sdk_messages")
        t0 = time.perf_counter()
        try:
            await self._handle(scope, receive, send, record, openai, session)
        finally:
            record.latency = time.perf_counter() - t0
            if record.client_disconnected:
                record.status = 499
            notify_request(self.observers, record)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord,
                      openai: bool, session: str | None) -> None:
        body = await self._read(scope, receive, send, record, openai)
        if body is None:
            return
        try:
            request, dialect = self._parse(body, openai)
        except (PromptError, TranslationError) as exc:
            await _refuse(send, record, 400, "invalid_request_error", f"ccrotate: {exc}",
                          openai=openai)
            return
        agent = await self._load()
        if agent is None:
            await _refuse(send, record, 501, "api_error", INSTALL_HINT, openai=openai)
            return
        record.model, record.stream = request.model, request.stream
        steps = self.config.tool_steps
        # Chat completions cannot carry a tool result in an answer: steps become text.
        answer = Answer(send, record, model=request.model, stream=request.stream,
                        steps="formatted" if openai and steps == "forward" else steps,
                        openai=dialect)
        await self._call(agent, request, answer, receive, session)

    async def _read(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord,
                    openai: bool) -> bytes | None:
        refused = refusal(self.authenticate, scope)
        if refused is not None:
            await _refuse(send, record, *refused, openai=openai)
            return None
        try:
            return await read_body(scope, receive, self.max_body_size, self.body_timeout)
        except BodyTooLarge:
            await _refuse(send, record, 413, "request_too_large",
                          f"ccrotate: request body exceeds {self.max_body_size} bytes",
                          openai=openai)
        except BodyTimeout:
            await _refuse(send, record, 408, "timeout_error",
                          "ccrotate: request body not received in time", openai=openai)
        except ClientGone:
            record.client_disconnected = True
        return None

    def _parse(self, body: bytes, openai: bool) -> tuple[AgentRequest, OpenAIDialect | None]:
        if not openai:
            return parse_request(body), None
        translated = self.translator.translate_request(body)
        return parse_request(translated.body), OpenAIDialect(self.translator, translated)

    async def _call(self, agent: ModuleType, request: AgentRequest, answer: Answer,
                    receive: Receive, session: str | None) -> None:
        config, record = self.config, answer.record
        acquired = False
        with anyio.move_on_after(config.queue_timeout):
            await self.slots.acquire()
            acquired = True
        if not acquired:
            await answer.fail(429, "rate_limit_error",
                              f"ccrotate: all {config.max_concurrent} agent slots are busy "
                              f"(waited {config.queue_timeout:g} s)", retry_after=1.0)
            return
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + config.deadline) as scope:
                watcher = asyncio.get_running_loop().create_task(
                    watch_disconnect(receive, scope, record))
                try:
                    await self._attempts(agent, request, answer, session)
                except OSError:
                    record.client_disconnected = True  # ASGI 2.4: send() after it left
                finally:
                    watcher.cancel()
            failed = watcher.exception() if watcher.done() and not watcher.cancelled() else None
            if failed is not None:
                raise failed  # receive() itself failed, as a task group would have raised it
            if answer.done:
                # Servers answer receive() with http.disconnect once the response is
                # complete, and the watcher may read that first: not a client leaving.
                record.client_disconnected = False
            elif scope.cancelled_caught and not record.client_disconnected:
                await _quietly(answer.fail(504, "api_error", "ccrotate: the agent did not "
                                           f"finish within {config.deadline:g} s (deadline)"))
        finally:
            self.slots.release()

    async def _attempts(self, agent: ModuleType, request: AgentRequest, answer: Answer,
                        session: str | None) -> None:
        record, tried, refreshed = answer.record, list[str](), set[str]()
        last: Problem | None = None
        if session is not None:
            done, last = await self._warm(request, answer, session)
            if done:
                return
        while record.attempts < self.config.max_attempts:
            try:
                account = await self._acquire(request, tried)
            except NoAccountAvailable as exc:
                status, type_, message = last or (
                    429 if exc.retry_after is not None else 503,
                    "rate_limit_error" if exc.retry_after is not None else "api_error",
                    f"ccrotate: {exc}")
                await answer.fail(status, type_, message, retry_after=exc.retry_after)
                return
            record.attempts += 1
            answer.account = record.account = account.name
            try:
                problem = await self._attempt(agent, account, request, answer, session)
            finally:
                self.pool.release(account.name)
            if problem is None:
                self.pool.report_success(account.name)
                return
            if await self._refreshed(account, problem, answer, refreshed):
                record.attempts -= 1  # the retry after a refresh is the same attempt
                continue
            if not self._fail_over(account, problem, answer, request.model):
                await answer.fail(*problem)
                return
            tried.append(account.name)
            last = problem
        if last is not None:
            await answer.fail(*last)

    async def _refreshed(self, account: Account, problem: Problem, answer: Answer,
                         refreshed: set[str]) -> bool:
        """After an OAuth account's 401 before any output: refresh its token once, and
        say whether to run the call again (the pool prefers no account: it is free)."""
        if (problem[0] != 401 or account.kind is not AccountKind.OAUTH or answer.produced
                or self.refresher is None or account.name in refreshed):
            return False
        refreshed.add(account.name)
        try:
            await self.refresher.refresh(account.name, reason="the agent's upstream answered 401")
        except (RefreshError, UnknownAccount):
            return False
        return True

    async def _acquire(self, request: AgentRequest, tried: list[str]) -> Account:
        account = self.pool.acquire(exclude=tried,
                                    context=SelectionContext(model=request.model))
        if self.refresher is not None and account.kind is AccountKind.OAUTH:
            try:
                return await self.refresher.ensure_fresh(account)
            except (RefreshError, UnknownAccount):
                # The refresher reports the account itself; the call tries another one.
                self.pool.release(account.name)
                tried.append(account.name)
                return await self._acquire(request, tried)
        return account

    def _fail_over(self, account: Account, problem: Problem, answer: Answer,
                   model: str) -> bool:
        status, type_, message = problem
        verdict = classify(status, _NoHeaders(), (type_, message, None), kind=account.kind,
                           now=self.pool.now(), default_cooldown=self.pool.default_cooldown)
        if status == 0:  # the agent itself failed (not the account): no cooldown
            return not answer.produced
        self.pool.report(account.name, verdict, model=model)
        if answer.produced or not verdict.fail_over:
            return False
        note_failover(answer.record, self.observers,
                      Failover(account.name, verdict.reason.value, status))
        return True

    async def _attempt(self, agent: ModuleType, account: Account, request: AgentRequest,
                       answer: Answer, session: str | None) -> Problem | None:
        """One agent run on ``account``: ``None`` once answered, else what went wrong."""
        tmp = Path(tempfile.mkdtemp(prefix="ccrotate-sdk-"))
        home, cwd = tmp / "home", self.config.workspace or tmp / "work"
        home.mkdir()
        cwd.mkdir(parents=True, exist_ok=True)
        process = agent.AgentProcess(self.config, account, model=request.model,
                                     system=request.system, home=home, cwd=cwd,
                                     partial=request.stream)
        kept = False
        self._live.add(process)
        try:
            problem = await _run(process, request.content, answer)
            if problem is None and session is not None:
                kept = await self.sessions.add(Session(session, account.name, process, tmp,
                                                 request.model))
            return problem
        finally:
            self._live.discard(process)
            if not kept:
                await dispose(process, tmp)

    async def _warm(self, request: AgentRequest, answer: Answer,
                    session_id: str) -> tuple[bool, Problem | None]:
        """Ask the warm session ``session_id``: whether the call is answered, and the
        problem that ended the session (a fresh agent then takes the whole conversation)."""
        session = await self.sessions.take(session_id, request.model)
        if session is None:
            return False, None
        try:
            self.pool.acquire(session.account, context=SelectionContext(model=request.model))
        except (NoAccountAvailable, UnknownAccount):
            await self.sessions.discard(session)  # its account cannot serve now
            return False, None
        answer.account = answer.record.account = session.account
        answer.record.attempts += 1
        try:
            problem = await _run(session.process, request.last_turn, answer)
        finally:
            self.pool.release(session.account)
        if problem is None:
            self.pool.report_success(session.account)
            await self.sessions.put_back(session)
            return True, None
        await self.sessions.discard(session)
        if not self._fail_over(session.account_of(self.pool), problem, answer, request.model):
            await answer.fail(*problem)
            return True, None
        return False, problem


async def _run(process: Any, content: list[dict[str, Any]], answer: Answer) -> Problem | None:
    failure: Failure | None = None
    result: Result | None = None

    async def sink(event: AgentEvent) -> None:
        nonlocal failure, result
        if isinstance(event, Failure):
            failure = event
        elif isinstance(event, Result):
            result = event
        else:
            await answer.event(event)

    try:
        if process.pid is None:
            await process.start()
        await process.ask(content, sink)
    except AgentError as exc:
        log.debug("ccrotate sdk: %s; agent stderr: %s", exc, process.stderr_tail())
        if failure is None:
            return 0, "api_error", f"ccrotate: {exc}"
    problem = _problem(failure, result)
    if problem is None and result is not None:
        usage_into(answer.record, result.usage)
        await answer.finish(result)
    return problem


def _problem(failure: Failure | None, result: Result | None) -> Problem | None:
    if failure is None and result is not None and not result.is_error:
        return None
    if failure is None:
        ended = result.subtype if result is not None else "no result"
        return 0, "api_error", f"ccrotate: the agent's run ended with {ended}"
    status, type_ = _FAILURES.get(failure.kind, (500, "api_error"))
    if result is not None and result.api_error_status:
        status = result.api_error_status
        type_ = _TYPE_OF_STATUS.get(status, type_)
    return status, type_, f"ccrotate: {failure.message}"


async def _quietly(done: Any) -> None:
    with contextlib.suppress(OSError):  # the client is gone: nothing to tell it
        await done


async def _send_error(send: Send, status: int, type_: str, message: str, *,
                      openai: bool) -> None:
    shown = error_response(status, type_, message, openai=openai)
    await send_bytes(send, *shown)


async def _refuse(send: Send, record: RequestRecord, status: int, type_: str, message: str, *,
                  openai: bool) -> None:
    record.error_type = type_
    shown = error_response(status, type_, message, openai=openai)
    record.status = shown[0]
    await send_bytes(send, *shown)



