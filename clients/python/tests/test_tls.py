"""Mutual TLS with kits from `campfire provision`: a Python admin's signed job, served by a
TypeScript agent that requires signed jobs and by a Python agent."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

import campfire
from campfire.admin.v1 import job_pb2
from campfire.agent.v1 import agent_service_pb2 as agent_pb
from campfire.common.v1 import exchange_pb2
from campfire.job_gate import JobGate
from conftest import REPO, BackgroundProcess, node_process
from test_session import job_folder

PROJECT = {
    "name": "pyproj",
    "site": {"name": "site", "hosts": ["localhost", "127.0.0.1"]},
    "clients": [{"name": "hospital-a", "org": "a"}, {"name": "hospital-b", "org": "b"}],
    "admins": [{"name": "alice@a.org", "org": "a", "role": "project_admin"}],
}


@pytest.fixture(scope="module")
def kits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kits")
    (root / "project.json").write_text(json.dumps(PROJECT))
    subprocess.run(["node", "--import", "tsx", "bin/campfire.mjs", "provision", str(root / "project.json"), "--out", str(root / "out")], cwd=REPO, check=True, capture_output=True, timeout=120)
    return root / "out"


@pytest.fixture(scope="module")
def tls_site(kits: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundProcess]:
    site = BackgroundProcess(
        node_process(["bin/campfire.mjs", "--tls-dir", str(kits / "site"), "site", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path_factory.mktemp("tls-data")), "--schedule-interval-ms", "100"], {"LOG_LEVEL": "info"}),
        lambda line: line.get("msg") == "site listening",
    )
    site.address = f"localhost:{site.ready['port']}"
    yield site
    site.close()


def test_a_job_signed_with_an_admin_kit_runs_on_an_agent_that_requires_signed_jobs(kits: Path, tls_site: BackgroundProcess, tmp_path: Path) -> None:
    # The TypeScript agent of hospital-b: by default, with a kit, it runs only jobs whose signature it verified.
    checking = BackgroundProcess(
        node_process(["bin/campfire.mjs", "--site", tls_site.address, "--tls-dir", str(kits / "hospital-b"), "agent", "--client", "hospital-b", "--once", "--heartbeat-interval-ms", "200"], {"LOG_LEVEL": "info"}),
        lambda line: line.get("msg") == "connected to site",
    )
    python_agent = campfire.Agent(tls_site.address, "hospital-a", kit=str(kits / "hospital-a"), heartbeat_interval=0.2).start()
    signatures: list[bool] = []

    def train() -> None:
        for task in python_agent.tasks():
            signatures.append(task.job_signature is not None)
            task.submit({name: weights + 1 for name, weights in task.arrays().items()}, meta={"NUM_STEPS_CURRENT_ROUND": 1})

    trainer = threading.Thread(target=train, daemon=True)
    trainer.start()
    try:
        assert python_agent.wait_until_connected(20)
        folder = job_folder(tmp_path)
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps({**meta, "min_clients": 2}))
        with campfire.Session(tls_site.address, kit=str(kits / "alice@a.org")) as session:
            job_id = session.submit_job(folder)
            final = session.wait_for_job(job_id, timeout=120)
            assert campfire.status_name(final.status) == "FINISHED:COMPLETED", (final.end_reason, list(final.refusals))
            assert final.submitter == "alice@a.org" and not final.refusals
            assert sorted(final.clients) == ["hospital-a", "hospital-b"]
            assert signatures and all(signatures)

            # A signature over another definition is refused at submit, naming what differs.
            tampered = campfire.read_job_folder(folder)
            tampered.signature.CopyFrom(campfire.job_signing.sign_job_definition(tampered, campfire.Kit.read(kits / "alice@a.org")))
            tampered.min_clients = 1
            with pytest.raises(campfire.InvalidJobDefinition, match="min_clients"):
                session.submit_definition(tampered)
        trainer.join(30)
    finally:
        python_agent.close()
        checking.close()


def test_an_agent_with_a_kit_refuses_an_unsigned_job_before_its_trainer_sees_it(kits: Path, tls_site: BackgroundProcess, tmp_path: Path) -> None:
    agent = campfire.Agent(tls_site.address, "hospital-a", kit=str(kits / "hospital-a"), heartbeat_interval=0.2).start()
    try:
        assert agent.wait_until_connected(20)
        folder = job_folder(tmp_path)
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps({**meta, "deploy_map": {"app": ["server", "hospital-a"]}}))
        with campfire.Session(tls_site.address, kit=str(kits / "alice@a.org"), sign_jobs=False) as session:
            job_id = session.submit_job(folder)
            final = session.wait_for_job(job_id, timeout=120)
        assert campfire.status_name(final.status) != "FINISHED:COMPLETED"
        assert [refusal.client for refusal in final.refusals] == ["hospital-a"]
        assert final.refusals[0].reason.startswith(f"hospital-a refused the job: job {job_id} is not signed"), final.refusals[0].reason
        with pytest.raises(campfire.JobEnded):  # the job ended, and the trainer never saw a task of it
            agent.get_task(timeout=10)
    finally:
        agent.close()


def test_an_agent_saying_hello_as_another_client_is_refused(kits: Path, tls_site: BackgroundProcess) -> None:
    agent = campfire.Agent(tls_site.address, "hospital-b", kit=str(kits / "hospital-a")).start()
    try:
        with pytest.raises(campfire.PermissionDenied, match="hospital-a"):
            agent.wait_until_connected(20)
    finally:
        agent.close()



def signed_task(kits: Path, tmp_path: Path, task_name: str = "train", signer: str = "alice@a.org", deploy: tuple[str, ...] = ("server", "hospital-a")) -> tuple[agent_pb.Task, job_pb2.JobDefinition]:
    definition = campfire.read_job_folder(job_folder(tmp_path))
    del definition.deploy_map[:]
    definition.deploy_map.add(app_name="app", sites=list(deploy))
    task = agent_pb.Task(task_id="t-1", task_name=task_name, job_id="j-1")
    task.job_signature.CopyFrom(campfire.job_signing.sign_job_definition(definition, campfire.Kit.read(kits / signer)))
    return task, definition


def test_the_job_gate_takes_what_an_admin_signed_and_names_what_does_not_hold(kits: Path, tmp_path: Path) -> None:
    gate = JobGate(campfire.Kit.read(kits / "hospital-a"), "hospital-a")
    task, definition = signed_task(kits, tmp_path / "ok")
    assert gate.refusal(task) is None
    data = exchange_pb2.DataExchange()
    data.meta.update({"current_round": 1, "total_rounds": 2, "client_config": {"epochs": 1}})
    assert gate.data_refusal(task, data) is None
    # What the site could alter under the admin's signature:
    other = agent_pb.Task(); other.CopyFrom(task); other.task_name = "exfiltrate"
    assert "task 'exfiltrate' is not one the signed workflow fedavg sends (train)" in gate.refusal(other)
    for meta, named in (({"total_rounds": 5}, "total_rounds 5"), ({"current_round": 2}, "round 2"), ({"client_config": {"epochs": 100}}, "client_config")):
        altered = exchange_pb2.DataExchange()
        altered.meta.update(meta)
        assert named in gate.data_refusal(task, altered)
    # Task.client_config (its filters) must be what was signed: the agent uses the signed one, and refuses another.
    task.client_config.update({"epochs": 1})
    assert gate.client_config(task) == ({"epochs": 1}, None)
    widened = agent_pb.Task(); widened.CopyFrom(task)
    widened.client_config.Clear()
    widened.client_config.update({"epochs": 1, "task_result_filters": [{"filters": [{"name": "include_vars", "args": {"patterns": [".*"]}}]}]})
    signed, refusal = gate.client_config(widened)
    assert signed == {"epochs": 1} and "its client_config is" in refusal and "the signed config_fed_client.json of app app" in refusal
    assert JobGate(None, "hospital-a").client_config(widened)[0]["task_result_filters"][0]["filters"][0]["name"] == "include_vars"
    tampered = agent_pb.Task(); tampered.CopyFrom(task); tampered.job_id = "j-2"
    tampered.job_signature.manifest = tampered.job_signature.manifest.replace(b'"min_clients":1', b'"min_clients":0')
    assert "does not verify over the manifest" in gate.refusal(tampered)
    # Who signed, and for whom:
    by_client, _ = signed_task(kits, tmp_path / "client", signer="hospital-b")
    assert "only an admin's certificate may sign jobs" in gate.refusal(by_client)
    elsewhere, _ = signed_task(kits, tmp_path / "elsewhere", deploy=("server", "hospital-b"))
    assert "does not deploy this client: hospital-a" in gate.refusal(elsewhere)
    assert "organisation a, and this client's policy allows jobs from organisations b" in JobGate(campfire.Kit.read(kits / "hospital-a"), "hospital-a", orgs=("b",)).refusal(task)
    unsigned = agent_pb.Task(task_id="t-3", task_name="train", job_id="j-3")
    assert "is not signed" in gate.refusal(unsigned)
    assert JobGate(campfire.Kit.read(kits / "hospital-a"), "hospital-a", require_signed_jobs=False).refusal(unsigned) is None
