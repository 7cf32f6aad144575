"""campfire.Session against `campfire site` (a real process, admin tokens), with a campfire.Agent as the trainer."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

import campfire
from campfire.admin.v1 import job_pb2, session_service_pb2 as session_pb
from conftest import AdminSite

INITIAL = {"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "fc.bias": np.array([0.5, -0.5], dtype=np.float32)}


def job_folder(root: Path, rounds: int = 2, workflow: str = "fedavg") -> Path:
    """A job folder as a person writes it: meta.json, the app's configs, and an initial model in safetensors."""
    folder = root / "py-fedavg"
    (folder / "app" / "config").mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"name": "py-fedavg", "deploy_map": {"app": ["@ALL"]}, "min_clients": 1}))
    server = {"workflow": workflow, "args": {"num_rounds": rounds, "initial_model": "model.safetensors", "train_timeout": 60}}
    (folder / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server))
    (folder / "app" / "config" / "config_fed_client.json").write_text(json.dumps({"epochs": 1}))
    (folder / "app" / "model.safetensors").write_bytes(campfire.to_safetensors(INITIAL))
    return folder


def serve(site: AdminSite, client: str) -> tuple[campfire.Agent, threading.Thread, list[dict]]:
    """A Python agent that adds 1 to every weight of every train task, until its job ends."""
    agent = campfire.Agent(site.address, client, heartbeat_interval=0.2).start()
    rounds: list[dict] = []

    def train() -> None:
        for task in agent.tasks():
            rounds.append(task.meta)
            task.submit({name: weights + 1 for name, weights in task.arrays().items()}, meta={"NUM_STEPS_CURRENT_ROUND": 1})

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    return agent, thread, rounds


def test_submit_monitor_download_list_meta_clone_abort_delete(admin_site: AdminSite, tmp_path: Path) -> None:
    with campfire.Session(admin_site.address, token=AdminSite.TOKEN) as session:
        agent, trainer, rounds = serve(admin_site, "py-session-client")
        try:
            assert agent.wait_until_connected(20)
            job_id = session.submit_job(job_folder(tmp_path))
            updates = list(session.monitor(job_id, timeout=120))
            trainer.join(30)
        finally:
            agent.close()
        statuses = [campfire.status_name(update.meta.status) for update in updates]
        assert statuses[-1] == "FINISHED:COMPLETED", updates[-1].meta.end_reason
        assert "RUNNING" in statuses
        assert updates[-1].return_code == session_pb.MONITOR_RETURN_CODE_JOB_FINISHED
        assert [entry["current_round"] for entry in rounds] == [0, 1]
        assert isinstance(agent.closed_with, campfire.JobEnded)

        meta = session.get_job_meta(job_id)
        assert meta.name == "py-fedavg" and meta.submitter == "py-admin" and meta.status == job_pb2.RUN_STATUS_FINISHED_COMPLETED
        assert job_id in [job.job_id for job in session.list_jobs(name_prefix="py-fedavg")]

        result = session.download_job_result(job_id, tmp_path / "results")
        assert result == (tmp_path / "results" / job_id).resolve()
        final = campfire.from_safetensors((result / "models" / "final.safetensors").read_bytes())
        for name, initial in INITIAL.items():
            np.testing.assert_array_equal(final[name], initial + 2)  # two rounds of one client's +1
        assert not list((tmp_path / "results").glob("*.partial-*"))

        clone_id = session.clone_job(job_id)
        assert clone_id != job_id and session.get_job_meta(clone_id).cloned_from == job_id
        assert session.abort_job(clone_id, "not needed") == job_pb2.RUN_STATUS_FINISHED_ABORTED
        assert campfire.status_name(session.wait_for_job(clone_id, timeout=30).status) == "FINISHED:ABORTED"
        for finished in (clone_id, job_id):
            session.delete_job(finished)
            with pytest.raises(campfire.JobNotFound):
                session.get_job_meta(finished)


def test_each_refusal_is_its_typed_exception(admin_site: AdminSite, tmp_path: Path) -> None:
    with campfire.Session(admin_site.address) as anonymous, pytest.raises(campfire.Unauthenticated) as raised:
        anonymous.list_jobs()
    assert raised.value.code.name == "UNAUTHENTICATED"
    with campfire.Session(admin_site.address, token="wrong") as wrong, pytest.raises(campfire.Unauthenticated):
        wrong.list_jobs()
    with campfire.Session(admin_site.address, token=AdminSite.TOKEN) as session:
        with pytest.raises(campfire.JobNotFound, match="no-such-job"):
            session.get_job_meta("no-such-job")
        bad = job_folder(tmp_path, workflow="no-such-workflow")
        with pytest.raises(campfire.InvalidJobDefinition, match="no-such-workflow"):
            session.submit_job(bad)
        (bad / "meta.json").write_text(json.dumps({"deploy_map": {"missing-app": ["@ALL"]}}))
        with pytest.raises(campfire.InvalidJobDefinition, match="missing-app"):
            session.submit_job(bad)
        # Running (it waits for a client that never comes): neither downloadable nor deletable.
        waiting = session.submit_job(job_folder(tmp_path / "waiting"))
        with pytest.raises(campfire.JobNotDone):
            session.download_job_result(waiting, tmp_path / "results")
        session.abort_job(waiting)
        session.delete_job(waiting)
    with campfire.Session(admin_site.address, token=AdminSite.VIEWER_TOKEN) as viewer, pytest.raises(campfire.PermissionDenied):
        viewer.submit_job(job_folder(tmp_path / "viewer"))
