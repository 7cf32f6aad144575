"""Task filters in campfire.Agent against real sites: what the site receives, the client's own
mandatory filters, allow_job_filters, bad configurations (docs/privacy.md is the specification)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pytest

import campfire
from campfire.common.v1 import exchange_pb2, return_code_pb2
from campfire.privacy import FilterConfig, filter_result
from campfire.tensors import arrays_of, data_exchange
from conftest import AdminSite, Driver, array_of, wire_tensor
from test_agent import FAST, Trainer, eventually, new_client
from test_session import job_folder

BASE = {"w": np.full(4, 10, dtype=np.float32), "bn.mean": np.array([0.5, -0.5], dtype=np.float32), "steps": np.array([7], dtype=np.int64)}
DELTA = np.array([3, 4, 0, 0], dtype=np.float32)  # the trainer's update of "w": norm 5


def entry(name: str, tasks: Optional[list[str]] = None, **args: object) -> dict:
    return {**({"tasks": tasks} if tasks is not None else {}), "filters": [{"name": name, "args": args}]}


def results(*entries: dict) -> dict:
    return {"task_result_filters": list(entries)}


class Answers:
    """The trainer: answers each task with `answer(task)` (default: w + DELTA, the rest as received)."""

    def __init__(self) -> None:
        self.answer: Callable[[campfire.Task], dict] = lambda task: {**task.arrays(), "w": task.arrays()["w"] + DELTA}
        self.seen: list[campfire.Task] = []

    def __call__(self, task: campfire.Task) -> str:
        self.seen.append(task)
        return task.submit(self.answer(task), meta={"NUM_STEPS_CURRENT_ROUND": 1})


def run_task(driver: Driver, client: str, client_config: Optional[dict], arrays: dict[str, np.ndarray] = BASE, task_name: str = "train") -> tuple[dict, dict[str, np.ndarray]]:
    fields = {} if client_config is None else {"client_config": client_config}
    reply = driver("task", client=client, task_name=task_name, tensors=[wire_tensor(name, array) for name, array in arrays.items()], **fields)
    assert "error" not in reply, reply
    return reply, {tensor["name"]: array_of(tensor) for tensor in reply["tensors"]}


Served = tuple[str, Answers, Trainer]


@pytest.fixture
def serve(driver: Driver) -> Iterator[Callable[..., Served]]:
    """Starts an agent with a privacy config (None: none) and its trainer on the driver site; closed after the test."""
    agents: list[campfire.Agent] = []

    def start(privacy: object = None) -> Served:
        client = new_client()
        answers = Answers()
        agent = campfire.Agent(driver.address, client, privacy=privacy, **FAST).start()  # type: ignore[arg-type]
        agents.append(agent)
        assert agent.wait_until_connected(10)
        return client, answers, Trainer(agent, answers)

    yield start
    for agent in agents:
        agent.close()


def test_each_built_in_filter_changes_what_the_site_receives(driver: Driver, serve: Callable[..., Served]) -> None:
    client, answers, trainer = serve()
    trained = BASE["w"] + DELTA

    reply, got = run_task(driver, client, results(entry("exclude_vars", patterns=["bn\\..*"])))
    assert reply["return_code"] == return_code_pb2.RETURN_CODE_OK
    assert list(got) == ["w", "steps"] and reply["meta"]["filters_applied"] == ["exclude_vars"]
    np.testing.assert_array_equal(got["w"], trained)  # untouched tensors keep their bytes

    _, got = run_task(driver, client, results(entry("include_vars", patterns=["w", "st.*"])))
    assert list(got) == ["w", "steps"]

    # clip_l2: the update (result - the task's model) of norm 5 scaled to 1; int64 "steps" passes as it was.
    reply, got = run_task(driver, client, results(entry("clip_l2", max_norm=1.0)))
    np.testing.assert_array_equal(got["w"], (BASE["w"].astype(np.float64) + DELTA.astype(np.float64) / 5).astype(np.float32))
    np.testing.assert_array_equal(got["bn.mean"], BASE["bn.mean"])
    assert got["steps"].dtype == np.int64 and got["steps"].tolist() == [7]
    assert reply["meta"] == {"NUM_STEPS_CURRENT_ROUND": 1, "filters_applied": ["clip_l2"]}
    # Within max_norm: nothing changes.
    _, got = run_task(driver, client, results(entry("clip_l2", max_norm=5.0)))
    np.testing.assert_array_equal(got["w"], trained)

    # per_tensor: each tensor's own update clipped alone.
    answers.answer = lambda task: {"w": task.arrays()["w"] + DELTA, "bn.mean": task.arrays()["bn.mean"] + np.float32(0.25)}
    _, got = run_task(driver, client, results(entry("clip_l2", max_norm=0.5, per_tensor=True)))
    assert np.linalg.norm(got["w"].astype(np.float64) - BASE["w"]) == pytest.approx(0.5, rel=1e-6)
    np.testing.assert_array_equal(got["bn.mean"], BASE["bn.mean"] + np.float32(0.25))  # norm 0.354: within 0.5

    # gaussian_noise with a seed (tests only): exactly the seeded draws, so the site got update + N(0, 0.5^2).
    big = {"w": np.zeros(20_000, dtype=np.float32)}
    answers.answer = lambda task: {"w": task.arrays()["w"] + np.float32(1)}
    _, got = run_task(driver, client, results(entry("gaussian_noise", stddev=0.5, seed=11)), big)
    noise = np.random.Generator(np.random.PCG64(11)).normal(0.0, 0.5, 20_000)
    np.testing.assert_array_equal(got["w"], (1.0 + noise).astype(np.float32))
    assert abs(float(np.std(got["w"])) - 0.5) < 0.02
    # Unseeded: fresh noise from the OS for every result.
    _, first = run_task(driver, client, results(entry("gaussian_noise", stddev=0.5)), big)
    _, second = run_task(driver, client, results(entry("gaussian_noise", stddev=0.5)), big)
    assert not np.array_equal(first["w"], second["w"]) and abs(float(np.std(first["w"] - 1)) - 0.5) < 0.02

    # percentile_sparsify: |u| below the 75th percentile back to the model's value, the rest clipped to gamma.
    update = np.array([0.1, -0.2, 3, -4, 0.3, 0.05, -0.01, 2], dtype=np.float32)
    answers.answer = lambda task: {"w": task.arrays()["w"] + update}
    _, got = run_task(driver, client, results(entry("percentile_sparsify", percentile=75, gamma=2.5)), {"w": np.ones(8, dtype=np.float32)})
    np.testing.assert_array_equal(got["w"] - np.float32(1), np.array([0, 0, 2.5, -2.5, 0, 0, 0, 2], dtype=np.float32))

    # Data filters: the trainer never sees what they drop, and the task's meta says which ran.
    answers.answer = lambda task: task.arrays()
    _, got = run_task(driver, client, {"task_data_filters": [entry("exclude_vars", patterns=["bn\\..*"])]})
    assert list(answers.seen[-1].arrays()) == ["w", "steps"] and answers.seen[-1].meta["filters_applied"] == ["exclude_vars"]
    assert list(got) == ["w", "steps"]
    assert trainer.error is None


def test_a_weight_diff_result_is_its_own_update(driver: Driver, serve: Callable[..., Served]) -> None:
    client, answers, _ = serve()

    def diff(task: campfire.Task) -> exchange_pb2.DataExchange:
        return campfire.data_exchange({"w": DELTA}, kind=exchange_pb2.DATA_KIND_WEIGHT_DIFF)

    answers.answer = diff  # type: ignore[assignment]
    reply, got = run_task(driver, client, results(entry("clip_l2", max_norm=1.0)))
    assert reply["kind"] == exchange_pb2.DATA_KIND_WEIGHT_DIFF
    np.testing.assert_array_equal(got["w"], (DELTA.astype(np.float64) / 5).astype(np.float32))


LOCAL = {"task_result_filters": [{"tasks": ["train"], "filters": [{"name": "clip_l2", "args": {"max_norm": 1.0}}, {"name": "gaussian_noise", "args": {"noise_multiplier": 0.0}}]}]}


def test_the_clients_own_filters_run_when_the_job_names_none_and_after_the_jobs(driver: Driver, serve: Callable[..., Served], tmp_path: Path) -> None:
    path = tmp_path / "privacy.json"
    path.write_text(json.dumps(LOCAL))
    client, _, trainer = serve(str(path))
    clipped = (BASE["w"].astype(np.float64) + DELTA.astype(np.float64) / 5).astype(np.float32)
    for client_config in (None, {}, {"lr": 0.1}):
        reply, got = run_task(driver, client, client_config)
        np.testing.assert_array_equal(got["w"], clipped)
        assert reply["meta"]["filters_applied"] == ["clip_l2", "gaussian_noise"]
        assert reply["meta"]["dp_noise_multiplier"] == 0 and reply["meta"]["dp_clip_norm"] == 1
    # A job cannot switch them off, only add its own before them.
    reply, got = run_task(driver, client, results(entry("include_vars", patterns=["w"]), entry("clip_l2", max_norm=1000.0)))
    assert list(got) == ["w"] and reply["meta"]["filters_applied"] == ["include_vars", "clip_l2", "clip_l2", "gaussian_noise"]
    np.testing.assert_array_equal(got["w"], clipped)
    # Only for the tasks they name: another task's result leaves as the trainer made it.
    reply, got = run_task(driver, client, None, task_name="validate")
    np.testing.assert_array_equal(got["w"], BASE["w"] + DELTA)
    assert "filters_applied" not in reply["meta"]
    assert trainer.error is None


def test_allow_job_filters_false_refuses_a_job_that_names_filters(driver: Driver, serve: Callable[..., Served]) -> None:
    client, answers, _ = serve({"allow_job_filters": False})
    reply, _ = run_task(driver, client, results(entry("exclude_vars", patterns=["bn\\..*"])))
    assert reply["return_code"] == return_code_pb2.RETURN_CODE_UNAUTHORIZED
    assert reply["message"].startswith(f"{client} refused the job: ") and "allow_job_filters: false" in reply["message"]
    assert answers.seen == []  # the trainer never saw it
    reply, got = run_task(driver, client, {"lr": 0.1, "task_result_filters": []})  # a config without filters runs
    assert reply["return_code"] == return_code_pb2.RETURN_CODE_OK and len(answers.seen) == 1


def test_a_jobs_bad_filter_config_is_answered_bad_task_data_naming_entry_and_field(driver: Driver, serve: Callable[..., Served]) -> None:
    client, answers, _ = serve()
    cases = [
        (results(entry("clip_l2", max_norm=0)), "client_config: task_result_filters[0].filters[0].args.max_norm: must be a number > 0"),
        (results(entry("clip_l2", max_nrom=1.0)), "task_result_filters[0].filters[0].args.max_nrom: is not an arg of this filter"),
        ({"task_data_filters": [entry("dropout", rate=0.5)]}, "task_data_filters[0].filters[0].name: 'dropout' is not a filter"),
        (results(entry("gaussian_noise", noise_multiplier=1.0)), "task_result_filters[0].filters[0].args.noise_multiplier: needs a clip_l2 before it"),
        (results(entry("exclude_vars", patterns=["("])), "task_result_filters[0].filters[0].args.patterns[0]: '(' is not an RE2 regular expression"),
        (results(entry("include_vars", patterns=["fc", "(?=x)"])), "task_result_filters[0].filters[0].args.patterns[1]: '(?=x)' is not an RE2 regular expression"),
        ({"task_result_filters": [{"task": ["train"], "filters": []}]}, "task_result_filters[0].task: is not a field of a filter entry"),
    ]
    for client_config, named in cases:
        reply, _ = run_task(driver, client, client_config)
        assert reply["return_code"] == return_code_pb2.RETURN_CODE_BAD_TASK_DATA, reply
        assert reply["message"].startswith(f"{client} cannot run task train: client_config: ") and named in reply["message"], reply["message"]
    assert answers.seen == []


def test_a_filter_failing_as_it_runs_is_reported_to_the_site_and_the_trainer(driver: Driver, serve: Callable[..., Served]) -> None:
    clip_for_train_only = {"tasks": ["train"], "filters": [{"name": "clip_l2", "args": {"max_norm": 1.0}}]}
    client, answers, trainer = serve({"task_result_filters": [clip_for_train_only, entry("gaussian_noise", noise_multiplier=1.0)]})
    failed: list[BaseException] = []

    def submit(task: campfire.Task) -> str:
        try:
            return answers(task)
        except campfire.FilterFailed as error:
            failed.append(error)
            return "failed"

    trainer.train = submit
    # For "validate" no clip_l2 applies, so noise_multiplier has nothing to scale: nothing unfiltered may leave.
    reply, got = run_task(driver, client, None, task_name="validate")
    assert reply["return_code"] == return_code_pb2.RETURN_CODE_TASK_RESULT_FILTER_ERROR and got == {}
    assert "noise_multiplier needs a clip_l2 applied before it" in reply["message"]
    assert eventually(lambda: len(failed) == 1) and "RETURN_CODE_TASK_RESULT_FILTER_ERROR" in str(failed[0])
    reply, _ = run_task(driver, client, None)  # "train" clips first: fine
    assert reply["return_code"] == return_code_pb2.RETURN_CODE_OK and reply["meta"]["filters_applied"] == ["clip_l2", "gaussian_noise"]


def test_a_bad_local_config_stops_the_agent_at_construction_naming_file_entry_and_field(tmp_path: Path) -> None:
    path = tmp_path / "privacy.json"
    path.write_text(json.dumps({"task_result_filters": [{"filters": [{"name": "clip_l2", "args": {"max_norm": 1}}, {"name": "percentile_sparsify", "args": {"percentile": 100}}]}]}))
    with pytest.raises(campfire.InvalidFilterConfig) as raised:
        campfire.Agent("127.0.0.1:1", "hospital-a", privacy=str(path))
    assert str(raised.value) == f"{path}: task_result_filters[0].filters[1].args.percentile: must be a number in [0, 100), not 100"
    assert raised.value.path == "task_result_filters[0].filters[1].args.percentile"
    for privacy, named in (
        ({"allow_job_filter": False}, "privacy: allow_job_filter: is not a key of the privacy configuration"),
        ({"task_data_filters": [{"tasks": [], "filters": []}]}, "privacy: task_data_filters[0].tasks: must be a non-empty list"),
        ({"task_result_filters": [entry("gaussian_noise", stddev=1, noise_multiplier=1)]}, "task_result_filters[0].filters[0].args: needs exactly one of stddev and noise_multiplier"),
        ({"task_result_filters": [entry("clip_l2", max_norm=True)]}, "args.max_norm: must be a number > 0, not True"),
        (tmp_path / "privacy.yaml", "reads JSON (or a dict), not YAML"),
        (tmp_path / "missing.json", "cannot be read"),
    ):
        with pytest.raises(campfire.InvalidFilterConfig, match=".*" + named.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
            campfire.Agent("127.0.0.1:1", "hospital-a", privacy=privacy)


def test_with_result_filters_of_its_own_the_agent_sends_no_result_for_a_task_it_does_not_hold(driver: Driver) -> None:
    with campfire.Agent(driver.address, new_client(), privacy=LOCAL, **FAST) as agent:
        assert agent.wait_until_connected(10)
        with pytest.raises(campfire.AgentError, match="not held by this agent"):
            agent.submit_result("never-sent", campfire.data_exchange({"w": DELTA}))


def test_a_jobs_filters_from_config_fed_client_json_reach_the_agent_through_campfire_site(admin_site: AdminSite, tmp_path: Path) -> None:
    client = "py-filters-client"
    folder = job_folder(tmp_path, rounds=1)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "deploy_map": {"app": ["server", client]}}))
    client_config = {"epochs": 1, **results(entry("clip_l2", max_norm=1.0)), "task_data_filters": [entry("exclude_vars", patterns=["fc\\.bias"])]}
    (folder / "app" / "config" / "config_fed_client.json").write_text(json.dumps(client_config))
    agent = campfire.Agent(admin_site.address, client, heartbeat_interval=0.2).start()
    answers = Answers()
    # The trainer sees no fc.bias (a data filter dropped it) and returns the model + 1 (fc.bias as the site sent it).
    answers.answer = lambda task: {"fc.weight": task.arrays()["fc.weight"] + np.float32(1), "fc.bias": np.array([0.5, -0.5], dtype=np.float32)}
    trainer = Trainer(agent, answers)
    try:
        assert agent.wait_until_connected(20)
        with campfire.Session(admin_site.address, token=AdminSite.TOKEN) as session:
            job_id = session.submit_job(folder)
            final = session.wait_for_job(job_id, timeout=120)
            assert campfire.status_name(final.status) == "FINISHED:COMPLETED", final.end_reason
            downloaded = session.download_job_result(job_id, tmp_path / "results")
        trainer.join(30)
    finally:
        agent.close()
    assert answers.seen[0].client_config == client_config
    assert list(answers.seen[0].arrays()) == ["fc.weight"]
    model = campfire.from_safetensors((downloaded / "models" / "final.safetensors").read_bytes())
    initial = np.arange(6, dtype=np.float64).reshape(2, 3)
    # The site got fc.weight + 1 clipped to norm 1: the update of six ones has norm sqrt 6.
    np.testing.assert_allclose(model["fc.weight"], initial + 1 / np.sqrt(6), rtol=1e-6)
    np.testing.assert_array_equal(model["fc.bias"], [0.5, -0.5])


def test_a_pattern_that_would_backtrack_for_ever_matches_in_linear_time() -> None:
    # (a+)+$ on 40 a's and a b takes a backtracking engine about 2^40 steps; RE2 answers at once.
    name = "a" * 40 + "b"
    job = FilterConfig.of_job({"task_result_filters": [entry("exclude_vars", patterns=["(a+)+$"])]})
    result = data_exchange({name: np.ones(1, np.float32), "fc": np.ones(1, np.float32)})
    kept = arrays_of(filter_result(job.result_filters("train"), result, data_exchange({})))
    assert list(kept) == [name, "fc"]
