"""campfire.Agent: joins a site for one training process and serves its tasks.

    with campfire.Agent("127.0.0.1:7443", "hospital-a") as agent:
        for task in agent.tasks():
            weights = task.arrays()
            task.submit({name: w + 1 for name, w in weights.items()}, meta={"NUM_STEPS_CURRENT_ROUND": 1})

One thread keeps one Connect stream open (hello with protocol 2, heartbeats at
the welcome's interval, reconnects with capped exponential backoff and full
jitter); the trainer's thread takes tasks and submits results. A result is
held until the site acknowledges it and sent again on every new stream, large
ones uploaded again, so a dropped connection or a restarted site loses
nothing. Payloads over the welcome's max_inline_payload_bytes travel on
UploadPayload / DownloadPayload over a connection of their own, so a
heartbeat never waits behind a model.
"""

from __future__ import annotations

import collections
import datetime
import logging
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence, Union

import grpc
import numpy as np
from google.protobuf import json_format

from campfire import payloads
from campfire.agent.v1 import agent_service_pb2 as agent_pb
from campfire.agent.v1 import agent_service_pb2_grpc as agent_grpc
from campfire.channels import Kit, open_channel
from campfire.common.v1 import exchange_pb2, return_code_pb2
from campfire.errors import (
    PERMANENT_REFUSALS,
    AgentClosed,
    AgentError,
    CampfireError,
    DeadlineExceeded,
    FilterFailed,
    InvalidFilterConfig,
    JobEnded,
    Replaced,
    ResultNotAccepted,
    TaskAborted,
    error_from_rpc,
)
from campfire.job_gate import DEFAULT_ROLES, JobGate
from campfire.outbox import Outbox
from campfire.privacy import FilterConfig, PrivacyConfig, TaskFilters, filter_data, filter_result
from campfire.tensors import arrays_of, data_exchange

log = logging.getLogger("campfire.agent")

# The newest protocol this agent speaks (it handles protocol 1's messages too).
PROTOCOL_VERSION = 2
# How many finished task ids are remembered, so that a resent task is acknowledged, not run again.
REMEMBERED_TASKS = 64

Result = Union[exchange_pb2.DataExchange, Mapping[str, np.ndarray], None]
PrivacySource = Union[Mapping[str, object], str, Path, None]


class Task:
    """A task as the trainer receives it. Submit its result once, with submit()."""

    def __init__(
        self,
        agent: "Agent",
        message: agent_pb.Task,
        data: exchange_pb2.DataExchange,
        received: Optional[exchange_pb2.DataExchange] = None,
        client_config: Optional[dict] = None,
        filters: TaskFilters = TaskFilters(),
    ) -> None:
        self._agent = agent
        self.task_id: str = message.task_id
        self.task_name: str = message.task_name
        self.job_id: str = message.job_id
        # What the trainer sees: the data after the task data filters. Result filters take the update against `received`, as the site sent it.
        self.data = data
        self.received = received if received is not None else data
        self.filters = filters
        # The job's config_fed_client.json for this client's app (the signed one, for a signed job).
        self.client_config = client_config if client_config is not None else {}
        self.deadline: Optional[datetime.datetime] = message.deadline.ToDatetime(datetime.timezone.utc) if message.HasField("deadline") else None
        self.payload_kind: str = message.payload.WhichOneof("body") or "none"
        # The admin's signature of the job, when it is signed. This agent does not verify it (yet): the site did, at submit.
        self.job_signature = message.job_signature if message.HasField("job_signature") else None
        self._aborted = threading.Event()
        self.abort_reason = ""
        self.submitted = False

    @property
    def meta(self) -> dict:
        """The task data's meta (for round-based workflows "current_round" and "total_rounds")."""
        return json_format.MessageToDict(self.data.meta) if self.data.HasField("meta") else {}

    def arrays(self) -> dict[str, np.ndarray]:
        """The task's tensors by name, as read-only numpy arrays."""
        return arrays_of(self.data)

    @property
    def aborted(self) -> bool:
        return self._aborted.is_set()

    def wait_aborted(self, timeout: Optional[float] = None) -> bool:
        """Blocks until the site aborts this task (True) or `timeout` passes (False)."""
        return self._aborted.wait(timeout)

    def raise_if_aborted(self) -> None:
        """Raises TaskAborted when the site aborted the task: call it between training steps."""
        if self._aborted.is_set():
            raise TaskAborted(self.task_id, self.abort_reason)

    def submit(
        self,
        result: Result = None,
        meta: Optional[Mapping[str, object]] = None,
        return_code: int = return_code_pb2.RETURN_CODE_OK,
        message: str = "",
        timeout: Optional[float] = None,
    ) -> str:
        """Sends the result and waits until the site holds it; see Agent.submit_result."""
        self.raise_if_aborted()
        if isinstance(result, exchange_pb2.DataExchange):
            data = result
            if meta:
                data.meta.update(dict(meta))
        elif result is None and not meta:
            data = None
        else:
            data = data_exchange(result or {}, meta=meta)
        self.submitted = True
        return self._agent.submit_result(self.task_id, data, return_code, message, timeout)

    def _abort(self, reason: str) -> None:
        self.abort_reason = reason
        self._aborted.set()


class _Held:
    """A result until the site acknowledges it."""

    def __init__(self, task_id: str, result: agent_pb.TaskResult, encoded: Optional[bytes]) -> None:
        self.task_id = task_id
        self.result = result  # its payload is set per stream when `encoded` (uploaded) is set
        self.encoded = encoded
        self.disposition: Optional[int] = None
        self.reason = ""
        self.aborted: Optional[str] = None


class Agent:
    """Joins the site at `site` (host:port) for the client `client_name`. See the module's doc."""

    def __init__(
        self,
        site: str,
        client_name: str,
        agent_id: Optional[str] = None,
        kit: Union[Kit, str, None] = None,
        server_name: Optional[str] = None,
        insecure: bool = False,
        resources: Optional[Mapping[str, float]] = None,
        task_names: tuple[str, ...] = (),
        protocol_version: int = PROTOCOL_VERSION,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float = 30.0,
        resend_interval: float = 2.0,
        submit_timeout: float = 300.0,
        reconnect_base_delay: float = 0.1,
        reconnect_max_delay: float = 5.0,
        on_welcome: Optional[Callable[[agent_pb.Welcome], None]] = None,
        require_signed_jobs: Optional[bool] = None,
        allowed_orgs: Sequence[str] = ("*",),
        allowed_roles: Sequence[str] = DEFAULT_ROLES,
        privacy: PrivacySource = None,
    ) -> None:
        self.site = site
        self.client_name = client_name
        self.agent_id = agent_id or f"{client_name}-{uuid.uuid4().hex[:8]}"
        self.resources = dict(resources or {})
        self.task_names = list(task_names)
        self.protocol_version = protocol_version
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.resend_interval = resend_interval
        self.submit_timeout = submit_timeout
        self.reconnect_base_delay = reconnect_base_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.on_welcome = on_welcome  # called on the connection thread after every welcome (each reconnect too)
        # The client's own filters (a dict or a JSON file): run on every task whatever the job says; a bad one raises InvalidFilterConfig here.
        self.privacy = PrivacyConfig.load(privacy)
        kit = Kit.read(kit) if isinstance(kit, str) else kit
        # With a kit, by default only jobs signed by an admin of the project (and whom allowed_* allow) reach the trainer.
        self._gate = JobGate(kit, client_name, require_signed_jobs, allowed_orgs, allowed_roles)
        base = [("grpc.initial_reconnect_backoff_ms", int(reconnect_base_delay * 1000)), ("grpc.max_reconnect_backoff_ms", int(reconnect_max_delay * 1000))]
        self._channel = open_channel(site, kit, server_name, insecure, base)
        # Payloads on a connection of their own: a model's bytes never hold up a heartbeat.
        self._payload_channel = open_channel(site, kit, server_name, insecure, [*base, ("grpc.use_local_subchannel_pool", 1)])
        self._stub = agent_grpc.AgentServiceStub(self._channel)
        self._payload_calls = payloads.PayloadCalls(self._payload_channel)

        self._lock = threading.Condition()
        self._inbox: collections.deque[Task] = collections.deque()
        self._live: dict[str, Task] = {}
        self._known = collections.OrderedDict[str, None]()
        # Refused task id -> the answer sent (return code, message), to send again when the site resends the task.
        self._refusals = collections.OrderedDict[str, tuple[int, str]]()
        # Tasks whose data is being downloaded, and those of them the site aborted meanwhile.
        self._fetching: set[str] = set()
        self._aborted_while_fetching: set[str] = set()
        self._held: Optional[_Held] = None
        self._outbox: Optional[Outbox] = None
        self._call: Optional[grpc.Future] = None
        self._generation = 0
        self._connected = False
        self._closed_with: Optional[CampfireError] = None
        self._closing = threading.Event()
        self._last_heard = time.monotonic()
        self._metric_sequence = 0
        self._thread: Optional[threading.Thread] = None
        self.welcome: Optional[agent_pb.Welcome] = None
        self.bye: Optional[agent_pb.Bye] = None
        self.inline_limit = payloads.DEFAULT_INLINE_LIMIT

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> "Agent":
        """Starts joining the site in the background; returns at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"campfire-agent-{self.agent_id}", daemon=True)
            self._thread.start()
        return self

    def wait_until_connected(self, timeout: Optional[float] = None) -> bool:
        """True once the site welcomed this agent, False after `timeout`; raises why the agent closed, if it did."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._connected or self._closed_with is not None, timeout):
                return False
            if self._closed_with is not None and not self._connected:
                raise self._closed_with
            return True

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def closed_with(self) -> Optional[CampfireError]:
        """Why the agent closed (AgentClosed and its kinds for an orderly end), or None while open."""
        return self._closed_with

    def close(self, timeout: float = 2.0) -> None:
        """Says bye (BYE_REASON_AGENT_STOPPING), ends the stream and stops reconnecting."""
        with self._lock:
            outbox, call = self._outbox, self._call
            if self._connected and outbox is not None:
                outbox.put(agent_pb.ConnectRequest(bye=agent_pb.Bye(reason=agent_pb.BYE_REASON_AGENT_STOPPING, message="the agent is stopping")))
        self._close(AgentClosed("the agent was closed"))
        if outbox is not None:
            outbox.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive() and call is not None:
                call.cancel()  # a dead link never ends the stream: cut it
                self._thread.join(timeout)
        self._payload_channel.close()
        self._channel.close()

    def __enter__(self) -> "Agent":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- tasks and results ------------------------------------------------------------------

    def get_task(self, timeout: Optional[float] = None) -> Optional[Task]:
        """The next task, or None after `timeout`. Raises AgentClosed (or why the site refused the agent) once closed."""
        with self._lock:
            self._lock.wait_for(lambda: self._inbox or self._closed_with is not None, timeout)
            if self._inbox:
                return self._inbox.popleft()
            if self._closed_with is not None:
                raise self._closed_with
            return None

    def tasks(self) -> Iterator[Task]:
        """Tasks until the agent closes in order (bye, close()); raises the refusal if the site refused it.

        Submit each task's result before taking the next; an aborted task needs none.
        """
        previous: Optional[Task] = None
        while True:
            if previous is not None and not previous.submitted and not previous.aborted:
                raise RuntimeError(f"submit the result of task {previous.task_id} (or let it be aborted) before taking the next task")
            try:
                previous = self.get_task()
            except AgentClosed:
                return
            if previous is not None:
                yield previous

    def submit_result(
        self,
        task_id: str,
        data: Optional[exchange_pb2.DataExchange],
        return_code: int = return_code_pb2.RETURN_CODE_OK,
        message: str = "",
        timeout: Optional[float] = None,
    ) -> str:
        """Sends a result and blocks until the site acknowledges it.

        Returns the disposition's name, "ACCEPTED" or "DUPLICATE". The result
        is sent again after every reconnect (and every resend_interval) until
        then. Raises ResultNotAccepted when the site REJECTED or IGNORED it,
        TaskAborted when the site aborted the task meanwhile, AgentClosed when
        the agent closed, DeadlineExceeded after `timeout` (default
        submit_timeout) without an acknowledgement.

        The data goes through the task's result filters first (the job's,
        then this client's own); if they fail, the site is answered
        RETURN_CODE_TASK_RESULT_FILTER_ERROR and FilterFailed is raised.
        With result filters of its own, the agent sends data only for a task
        it holds: the filters need the task.
        """
        data, filter_error = self._filtered_result(task_id, data)
        if filter_error is not None:
            data, return_code, message = None, return_code_pb2.RETURN_CODE_TASK_RESULT_FILTER_ERROR, filter_error
        result = agent_pb.TaskResult(task_id=task_id, return_code=return_code, message=message)
        encoded: Optional[bytes] = None
        if data is not None:
            # Encoded once: upb's ByteSize() encodes too, so measuring first would double the cost of a large result.
            encoded = data.SerializeToString()
            if len(encoded) <= self.inline_limit:
                result.payload.inline.CopyFrom(data)
                encoded = None
        held = _Held(task_id, result, encoded)
        with self._lock:
            self._held = held
        try:
            disposition = self._deliver(held, time.monotonic() + (timeout if timeout is not None else self.submit_timeout))
            if filter_error is not None:
                raise FilterFailed(f"{filter_error} (the site was answered RETURN_CODE_TASK_RESULT_FILTER_ERROR)")
            return disposition
        finally:
            with self._lock:
                if self._held is held:
                    self._held = None
                self._live.pop(task_id, None)

    def _filtered_result(self, task_id: str, data: Optional[exchange_pb2.DataExchange]) -> tuple[Optional[exchange_pb2.DataExchange], Optional[str]]:
        """The data after the task's result filters, or why they failed."""
        if data is None:
            return None, None
        with self._lock:
            task = self._live.get(task_id)
        if task is None:
            if self.privacy.result:
                raise AgentError(f"task {task_id} is not held by this agent (never received, or already settled), so its result cannot go through this client's result filters; nothing was sent")
            return data, None
        try:
            filtered = filter_result(task.filters.result, data, task.received)
        except Exception as error:  # noqa: BLE001 - whatever a filter hits, the site hears of it and nothing unfiltered leaves
            log.error("task %s: the result filters failed: %s", task_id, error)
            return None, f"{self.client_name}: the result filters failed on task {task.task_name}: {error}"
        if task.filters.result:
            log.info("task %s: result filters %s applied", task_id, [filter_.name for filter_ in task.filters.result])
        return filtered, None

    def log(self, values: Mapping[str, float], task_id: str = "", meta: Optional[Mapping[str, object]] = None) -> bool:
        """Sends a metric record (fire and forget); False when no stream is up to take it."""
        record = exchange_pb2.DataExchange(kind=exchange_pb2.DATA_KIND_METRICS)
        record.values.update(dict(values))
        if meta:
            record.meta.update(dict(meta))
        with self._lock:
            self._metric_sequence += 1
            metric = agent_pb.MetricRecord(task_id=task_id, sequence=self._metric_sequence, record=record)
        metric.logged_at.GetCurrentTime()
        return self._send(agent_pb.ConnectRequest(metric=metric))

    def _deliver(self, held: _Held, deadline: float) -> str:
        sent_on = 0  # the stream generation the result last went out on
        sent_at = 0.0
        uploaded: tuple[int, Optional[agent_pb.PayloadRef]] = (0, None)
        while True:
            with self._lock:

                def due() -> bool:
                    return (
                        held.disposition is not None
                        or held.aborted is not None
                        or self._closed_with is not None
                        or (self._connected and (self._generation != sent_on or time.monotonic() - sent_at >= self.resend_interval))
                    )

                self._lock.wait_for(due, max(0.0, min(deadline, sent_at + self.resend_interval if sent_on else deadline) - time.monotonic()))
                if held.aborted is not None:
                    raise TaskAborted(held.task_id, held.aborted)
                if held.disposition is not None:
                    name = agent_pb.ResultDisposition.Name(held.disposition).removeprefix("RESULT_DISPOSITION_")
                    if held.disposition in (agent_pb.RESULT_DISPOSITION_ACCEPTED, agent_pb.RESULT_DISPOSITION_DUPLICATE):
                        return name
                    raise ResultNotAccepted(held.task_id, name, held.reason)
                if self._closed_with is not None:
                    raise AgentClosed(f"the agent closed before the site acknowledged the result of task {held.task_id}: {self._closed_with}")
                if time.monotonic() >= deadline:
                    raise DeadlineExceeded(f"the site did not acknowledge the result of task {held.task_id} in time", code=grpc.StatusCode.DEADLINE_EXCEEDED)
                if not self._connected:
                    continue
                generation = self._generation
            if held.encoded is not None and uploaded[0] != generation:
                # What a replaced stream uploaded may be gone (a restarted site): upload on this one.
                try:
                    ref = payloads.upload(self._payload_calls, self.agent_id, held.encoded, max(1.0, deadline - time.monotonic()))
                except CampfireError as error:
                    log.warning("result upload for task %s failed, will retry: %s", held.task_id, error)
                    self._closing.wait(min(self.resend_interval, max(0.0, deadline - time.monotonic())))
                    continue
                uploaded = (generation, ref)
                held.result.payload.ref.CopyFrom(ref)
            with self._lock:
                if self._generation != generation or self._outbox is None:
                    continue
                self._outbox.put(agent_pb.ConnectRequest(result=held.result))
            sent_on, sent_at = generation, time.monotonic()

    # --- the connection thread ---------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            outcome = self._stream_once()
            if outcome == "fatal" or self._closing.is_set():
                return
            if outcome == "welcomed":
                attempt = 0
            wait = random.uniform(0, min(self.reconnect_max_delay, self.reconnect_base_delay * 2**attempt))
            attempt += 1
            log.debug("reconnecting to %s in %.2f s", self.site, wait)
            self._closing.wait(wait)

    def _hello(self) -> agent_pb.ConnectRequest:
        hello = agent_pb.Hello(client_name=self.client_name, agent_id=self.agent_id, protocol_version=self.protocol_version, task_names=self.task_names)
        hello.resources.update(self.resources)
        return agent_pb.ConnectRequest(hello=hello)

    def _stream_once(self) -> str:
        self._last_heard = time.monotonic()
        outbox = Outbox(self.heartbeat_interval, self.heartbeat_timeout, lambda: self._last_heard, lambda: self._cut("the site is silent past the heartbeat timeout"))
        outbox.put(self._hello())
        call = self._stub.Connect(outbox.requests())
        with self._lock:
            self._outbox, self._call = outbox, call
        welcomed = False
        try:
            for response in call:
                self._last_heard = time.monotonic()
                kind = response.WhichOneof("kind")
                if kind == "welcome":
                    welcomed = True
                    self._welcomed(response.welcome, outbox)
                elif kind == "task":
                    if response.task.HasField("result_ack"):
                        self._result_ack(response.task.result_ack)
                    self._task(response.task)
                elif kind == "result_ack":
                    self._result_ack(response.result_ack)
                elif kind == "abort":
                    self._abort(response.abort.task_id, response.abort.reason)
                elif kind == "bye":
                    self._bye(response.bye)
            return "welcomed" if welcomed else "refused"
        except grpc.RpcError as error:
            if self._closing.is_set():
                return "fatal"
            if error.code() in PERMANENT_REFUSALS:
                refusal = error_from_rpc(error, "Connect", self.site)
                log.error("the site refused agent %s: %s", self.agent_id, refusal)
                self._close(refusal)
                return "fatal"
            log.warning("stream to %s ended: %s %s", self.site, error.code().name, error.details())
            return "welcomed" if welcomed else "refused"
        finally:
            outbox.close()
            with self._lock:
                if self._outbox is outbox:
                    self._outbox, self._call, self._connected = None, None, False
                self._lock.notify_all()

    def _cut(self, why: str) -> None:
        log.warning("%s: reconnecting", why)
        call = self._call
        if call is not None:
            call.cancel()

    def _welcomed(self, welcome: agent_pb.Welcome, outbox: Outbox) -> None:
        interval = welcome.heartbeat_interval.ToTimedelta().total_seconds()
        if interval > 0:
            outbox.set_heartbeat_interval(min(interval, self.heartbeat_interval))
        if self.on_welcome is not None:
            self.on_welcome(welcome)  # before anything is resent on this stream
        with self._lock:
            self.welcome = welcome
            self.inline_limit = welcome.max_inline_payload_bytes or payloads.DEFAULT_INLINE_LIMIT
            self._generation += 1
            self._connected = True
            self._lock.notify_all()
        log.info("welcomed by %s as %s (protocol %d)", welcome.site_name, welcome.agent_id, welcome.protocol_version)

    def _send(self, request: agent_pb.ConnectRequest) -> bool:
        with self._lock:
            return self._connected and self._outbox is not None and self._outbox.put(request)

    def _task(self, message: agent_pb.Task) -> None:
        ack = agent_pb.ConnectRequest(task_ack=agent_pb.TaskAck(task_id=message.task_id))
        with self._lock:
            refused = self._refusals.get(message.task_id)
            if refused is None and message.task_id in self._known:
                self._outbox and self._outbox.put(ack)  # a resent task: acknowledged again, not run twice
                return
            if refused is None:
                self._remember(message.task_id)
        if refused is not None:
            self._send_refusal(message.task_id, refused)
            return
        reason = self._gate.refusal(message)
        if reason is not None:
            self._refuse(message, reason)
            return
        client_config, reason = self._gate.client_config(message)
        if reason is not None:
            self._refuse(message, reason)
            return
        try:
            job_filters = FilterConfig.of_job(client_config)
        except InvalidFilterConfig as error:
            self._answer_without_trainer(message, return_code_pb2.RETURN_CODE_BAD_TASK_DATA, f"{self.client_name} cannot run task {message.task_name}: {error}")
            return
        if job_filters.names_filters and not self.privacy.allow_job_filters:
            self._refuse(message, "the job's client_config names filters, and this client applies only its own (allow_job_filters: false in its privacy config)")
            return
        filters = TaskFilters.for_task(self.privacy, job_filters, message.task_name)
        body = message.payload.WhichOneof("body")
        if body == "ref":
            with self._lock:
                self._fetching.add(message.task_id)
            threading.Thread(target=self._fetch, args=(message, client_config, filters), name=f"campfire-download-{message.task_id}", daemon=True).start()
            return
        self._accept(message, message.payload.inline if body == "inline" else exchange_pb2.DataExchange(), client_config, filters)

    def _fetch(self, message: agent_pb.Task, client_config: dict, filters: TaskFilters) -> None:
        def heard() -> None:
            self._last_heard = time.monotonic()

        try:
            encoded = payloads.download(self._payload_calls, message.payload.ref, self.submit_timeout, heard)
            data = exchange_pb2.DataExchange.FromString(encoded)
        except Exception as error:  # noqa: BLE001 - any failure: let the site's resend try again
            log.warning("could not fetch the data of task %s, waiting for the site to resend it: %s", message.task_id, error)
            with self._lock:
                self._known.pop(message.task_id, None)
                self._fetching.discard(message.task_id)
                self._aborted_while_fetching.discard(message.task_id)
            return
        self._accept(message, data, client_config, filters)

    def _refuse(self, message: agent_pb.Task, reason: str) -> None:
        """Answers a task this client will not run (RETURN_CODE_UNAUTHORIZED); the site records why in the job."""
        self._answer_without_trainer(message, return_code_pb2.RETURN_CODE_UNAUTHORIZED, f"{self.client_name} refused the job: {reason}")

    def _answer_without_trainer(self, message: agent_pb.Task, return_code: int, answer: str) -> None:
        """Answers a task at once, never handing it to the trainer (a refusal, a bad filter config); resent tasks get the same answer."""
        log.warning("task %s of job %s answered %s without the trainer: %s", message.task_id, message.job_id, return_code_pb2.ReturnCode.Name(return_code), answer)
        with self._lock:
            self._fetching.discard(message.task_id)
            self._refusals[message.task_id] = (return_code, answer)
            while len(self._refusals) > REMEMBERED_TASKS:
                self._refusals.popitem(last=False)
        self._send_refusal(message.task_id, (return_code, answer))

    def _send_refusal(self, task_id: str, refused: tuple[int, str]) -> None:
        self._send(agent_pb.ConnectRequest(result=agent_pb.TaskResult(task_id=task_id, return_code=refused[0], message=refused[1])))

    def _accept(self, message: agent_pb.Task, received: exchange_pb2.DataExchange, client_config: dict, filters: TaskFilters) -> None:
        mismatch = self._gate.data_refusal(message, received)
        if mismatch is not None:
            self._refuse(message, mismatch)
            return
        try:
            data = filter_data(filters.data, received)
        except Exception as error:  # noqa: BLE001 - whatever a filter hits, the site hears of it and the trainer never sees the task
            self._answer_without_trainer(message, return_code_pb2.RETURN_CODE_TASK_DATA_FILTER_ERROR, f"{self.client_name}: the task data filters failed on task {message.task_name}: {error}")
            return
        if filters.data:
            log.info("task %s: data filters %s applied", message.task_id, [filter_.name for filter_ in filters.data])
        task = Task(self, message, data, received, client_config, filters)
        with self._lock:
            self._fetching.discard(task.task_id)
            if task.task_id in self._aborted_while_fetching:
                self._aborted_while_fetching.discard(task.task_id)
                return  # the site stopped waiting before the trainer could see it
            if self._outbox is not None:
                self._outbox.put(agent_pb.ConnectRequest(task_ack=agent_pb.TaskAck(task_id=message.task_id)))
            self._live[task.task_id] = task
            self._inbox.append(task)
            self._lock.notify_all()

    def _result_ack(self, ack: agent_pb.ResultAck) -> None:
        with self._lock:
            held = self._held
            if held is not None and held.task_id == ack.task_id and held.disposition is None:
                held.disposition, held.reason = ack.disposition, ack.reason
                self._lock.notify_all()

    def _abort(self, task_id: str, reason: str) -> None:
        log.info("the site aborted task %s: %s", task_id, reason)
        with self._lock:
            task = self._live.pop(task_id, None)
            if task is not None:
                task._abort(reason)
                if task in self._inbox:
                    self._inbox.remove(task)
            if task_id in self._fetching:
                self._aborted_while_fetching.add(task_id)
            if self._held is not None and self._held.task_id == task_id:
                self._held.aborted = reason
            self._lock.notify_all()

    def _bye(self, bye: agent_pb.Bye) -> None:
        self.bye = bye
        log.info("the site said bye: %s %s", agent_pb.ByeReason.Name(bye.reason), bye.message)
        if bye.reason == agent_pb.BYE_REASON_JOB_ENDED:
            self._close(JobEnded(f"the job ended: {bye.message}"))
        elif bye.reason == agent_pb.BYE_REASON_REPLACED:
            self._close(Replaced(f"replaced by another agent with id {self.agent_id}"))
        if self._closing.is_set() and self._outbox is not None:
            self._outbox.close()

    def _close(self, reason: CampfireError) -> None:
        with self._lock:
            if self._closed_with is None:
                self._closed_with = reason
                for task in self._live.values():
                    task._abort(str(reason))
            self._closing.set()
            self._lock.notify_all()

    def _remember(self, task_id: str) -> None:
        self._known[task_id] = None
        while len(self._known) > REMEMBERED_TASKS:
            self._known.popitem(last=False)
