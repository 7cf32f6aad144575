"""campfire.Agent against a real site (test/fixtures/site-driver.ts), which sends the tasks."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Callable, Optional

import numpy as np
import pytest

import campfire
from campfire.agent.v1 import agent_service_pb2 as agent_pb
from campfire.common.v1 import return_code_pb2
from conftest import Driver, array_of, wire_tensor

FAST = {"heartbeat_interval": 0.1, "heartbeat_timeout": 3.0, "resend_interval": 0.3, "reconnect_base_delay": 0.05, "reconnect_max_delay": 0.2, "submit_timeout": 20.0}


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def new_client() -> str:
    return f"py-{uuid.uuid4().hex[:8]}"


def plus_one(task: campfire.Task) -> str:
    return task.submit({name: array + 1 for name, array in task.arrays().items()}, meta={"NUM_STEPS_CURRENT_ROUND": 1})


class Trainer:
    """Runs `train` on every task of the agent in a thread, recording what happened."""

    def __init__(self, agent: campfire.Agent, train: Callable[[campfire.Task], Optional[str]] = plus_one) -> None:
        self.agent = agent
        self.train = train
        self.tasks: list[campfire.Task] = []
        self.acks: list[Optional[str]] = []
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for task in self.agent.tasks():
                self.tasks.append(task)
                try:
                    self.acks.append(self.train(task))
                except campfire.TaskAborted:
                    self.acks.append("aborted")
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def join(self, timeout: float = 10.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the trainer did not finish"


def send_task(driver: Driver, client: str, arrays: dict[str, np.ndarray], **fields) -> dict:
    reply = driver("task", client=client, tensors=[wire_tensor(name, array) for name, array in arrays.items()], meta={"current_round": 0, "total_rounds": 1}, **fields)
    assert "error" not in reply, reply
    return reply


def assert_plus_one(reply: dict, sent: dict[str, np.ndarray]) -> None:
    assert reply["return_code"] == return_code_pb2.RETURN_CODE_OK, reply
    assert reply["problem"] == ""
    assert reply["meta"] == {"NUM_STEPS_CURRENT_ROUND": 1}
    returned = {tensor["name"]: array_of(tensor) for tensor in reply["tensors"]}
    assert list(returned) == list(sent)
    for name, array in sent.items():
        assert returned[name].dtype == array.dtype and returned[name].shape == array.shape
        np.testing.assert_array_equal(returned[name], array + 1)


def test_joins_with_protocol_2_heartbeats_serves_tasks_inline_and_by_reference_and_leaves_on_bye(driver: Driver) -> None:
    client = new_client()
    agent = campfire.Agent(driver.address, client, agent_id=f"{client}-1", **FAST).start()
    try:
        assert agent.wait_until_connected(10)
        assert agent.welcome.protocol_version == 2
        assert agent.welcome.agent_id == f"{client}-1"
        # Idle, it heartbeats at the welcome's interval (100 ms; the site's timeout is 800 ms, far below the 5 s default).
        assert eventually(lambda: driver("seen")["heartbeats"].get(f"{client}-1", 0) >= 2)
        trainer = Trainer(agent)
        rounds = [
            {"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
            {"fc1.weight": np.array([[-1.5, 0.25], [1e-3, 1e6]], dtype=np.float32), "fc1.bias": np.array([-1, 0.5], dtype=np.float64)},
            {"scalar": np.array(41, dtype=np.int32), "empty": np.zeros((0, 4), dtype=np.float32), "cube": np.arange(8, dtype=np.int64).reshape(2, 2, 2)},
            # Over the 512 KiB inline limit both ways: the agent downloads the task and uploads its result in chunks.
            {"big": (np.arange(512 * 600, dtype=np.float32) % 1000 / 8).reshape(512, 600)},
        ]
        for arrays in rounds:
            assert_plus_one(send_task(driver, client, arrays), arrays)
        assert [task.payload_kind for task in trainer.tasks] == ["inline", "inline", "inline", "ref"]
        assert trainer.acks == ["ACCEPTED"] * 4
        assert trainer.tasks[0].meta == {"current_round": 0, "total_rounds": 1}
        assert any(info["agentId"] == f"{client}-1" and info["connected"] for info in driver("agents")["agents"])

        driver("bye", client=client, reason=agent_pb.BYE_REASON_JOB_ENDED, message="done")
        trainer.join()
        assert trainer.error is None
        assert isinstance(agent.closed_with, campfire.JobEnded)
        assert agent.bye.reason == agent_pb.BYE_REASON_JOB_ENDED and agent.bye.message == "done"
    finally:
        agent.close()


def test_a_refused_hello_raises_the_typed_error_naming_the_field(driver: Driver) -> None:
    agent = campfire.Agent(driver.address, "", agent_id="py-nameless", **FAST).start()
    try:
        with pytest.raises(campfire.InvalidArgument, match=r"hello\.client_name must be 1 to 128 characters") as raised:
            agent.wait_until_connected(10)
        assert raised.value.code.name == "INVALID_ARGUMENT"
        with pytest.raises(campfire.InvalidArgument):
            list(agent.tasks())
    finally:
        agent.close()


def test_an_aborted_task_raises_task_aborted_and_the_next_task_is_served(driver: Driver) -> None:
    client = new_client()
    started = threading.Event()

    def wait_for_abort(task: campfire.Task) -> str:
        started.set()
        assert task.wait_aborted(10)
        task.raise_if_aborted()
        return "not aborted"

    with campfire.Agent(driver.address, client, **FAST) as agent:
        assert agent.wait_until_connected(10)
        trainer = Trainer(agent, wait_for_abort)
        pending = driver.start("task", client=client, tensors=[wire_tensor("w", np.zeros(3, dtype=np.float32))])
        assert started.wait(10)
        driver("abort", client=client)
        assert pending.get(timeout=10)["error"].startswith("TaskAborted")
        assert eventually(lambda: trainer.acks == ["aborted"]) and trainer.tasks[0].aborted
        trainer.train = plus_one
        arrays = {"w": np.ones(3, dtype=np.float32)}
        assert_plus_one(send_task(driver, client, arrays), arrays)


def test_a_result_whose_stream_dropped_is_resent_after_reconnecting_and_accepted_once(driver: Driver) -> None:
    client = new_client()
    holding = threading.Event()
    release = threading.Event()

    def submit_when_released(task: campfire.Task) -> str:
        holding.set()
        assert release.wait(10)
        return plus_one(task)

    # Through the proxy, whose connections the driver cuts and blackholes.
    with campfire.Agent(driver.proxy_address, client, **FAST) as agent:
        assert agent.wait_until_connected(10)
        trainer = Trainer(agent, submit_when_released)
        arrays = {"big": np.arange(300_000, dtype=np.float32)}  # 1.2 MB: uploaded again on the new stream
        pending = driver.start("task", client=client, tensors=[wire_tensor("big", arrays["big"])])
        assert holding.wait(10)
        generation = agent._generation
        driver("blackhole")  # the result leaves into a link that swallows it, unacknowledged
        release.set()
        time.sleep(0.3)
        driver("cut")
        reply = pending.get(timeout=20)
        assert_plus_one(reply, arrays)
        assert agent._generation > generation, "the agent did not reconnect"
        assert eventually(lambda: trainer.acks == ["ACCEPTED"]), trainer.acks


def test_a_second_copy_is_acknowledged_duplicate_and_an_unknown_task_rejected(driver: Driver) -> None:
    client = new_client()
    answers: list[str] = []

    def submit_twice(task: campfire.Task) -> str:
        answers.append(plus_one(task))
        data = campfire.data_exchange({name: array + 1 for name, array in task.arrays().items()}, meta={"NUM_STEPS_CURRENT_ROUND": 1})
        answers.append(agent.submit_result(task.task_id, data))
        with pytest.raises(campfire.ResultNotAccepted) as raised:
            agent.submit_result(f"never-sent-{uuid.uuid4().hex[:6]}", data)
        answers.append(raised.value.disposition)
        return answers[0]

    with campfire.Agent(driver.address, client, **FAST) as agent:
        assert agent.wait_until_connected(10)
        trainer = Trainer(agent, submit_twice)
        arrays = {"w": np.ones(2, dtype=np.float32)}
        assert_plus_one(send_task(driver, client, arrays), arrays)
        assert eventually(lambda: len(answers) == 3), trainer.error
        assert answers == ["ACCEPTED", "DUPLICATE", "REJECTED"]


def test_metrics_reach_the_site(driver: Driver) -> None:
    client = new_client()
    with campfire.Agent(driver.address, client, agent_id=f"{client}-m", **FAST) as agent:
        assert agent.wait_until_connected(10)
        assert agent.log({"loss": 0.25}, meta={"current_round": 0})
        def metrics() -> list[dict]:
            return [metric for metric in driver("seen")["metrics"] if metric["agentId"] == f"{client}-m"]

        assert eventually(lambda: bool(metrics()))
        assert metrics()[0]["values"] == {"loss": 0.25}


def test_plain_text_beyond_loopback_is_refused_without_insecure() -> None:
    with pytest.raises(campfire.InvalidArgument, match="not loopback"):
        campfire.Agent("192.0.2.1:7443", "hospital-a")
