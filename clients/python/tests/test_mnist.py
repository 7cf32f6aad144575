"""FedAvg on the MNIST example's real data with a numpy Python trainer (examples/mnist_agent.py)
beside the TypeScript trainer (examples/mnist/trainer.ts), each on its own non-IID shard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import campfire
from conftest import REPO, AdminSite, BackgroundProcess, node_process

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist_agent.py"


def test_a_python_and_a_typescript_trainer_finish_a_fedavg_job_together(admin_site: AdminSite, tmp_path: Path) -> None:
    shard = tmp_path / "shard-0.safetensors"
    subprocess.run(["node", "--import", "tsx", "examples/mnist/write-shard.ts", "--client-index", "0", "--num-clients", "2", "--out", str(shard)], cwd=REPO, check=True, capture_output=True, timeout=120)
    python = subprocess.Popen([sys.executable, str(EXAMPLE), "--site", admin_site.address, "--client-name", "mnist-1", "--shard", str(shard)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    typescript = BackgroundProcess(
        node_process(["examples/mnist/trainer.ts", "--site-address", admin_site.address, "--client-name", "mnist-2", "--client-index", "1", "--num-clients", "2"], {"LOG_LEVEL": "info"}),
        lambda line: line.get("msg") == "connected to site",
    )
    job = tmp_path / "mnist-job"
    (job / "app" / "config").mkdir(parents=True)
    (job / "meta.json").write_text(json.dumps({"name": "py-mnist", "deploy_map": {"app": ["server", "mnist-1", "mnist-2"]}, "min_clients": 2}))
    server = {"workflow": "fedavg", "args": {"num_rounds": 3, "validation_task_name": "validate", "key_metric": "accuracy", "train_timeout": 120}}
    (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server))
    (job / "app" / "config" / "config_fed_client.json").write_text(json.dumps({"epochs": 1}))
    try:
        with campfire.Session(admin_site.address, token=AdminSite.TOKEN) as session:
            job_id = session.submit_job(job)
            final = session.wait_for_job(job_id, timeout=240)
            assert campfire.status_name(final.status) == "FINISHED:COMPLETED", final.end_reason
            assert final.progress.total_rounds == 3
            # Each trainer sees mostly its own digits; the averaged model, validated by both, must know them all.
            assert final.progress.latest_metrics["global_accuracy"] > 0.75, dict(final.progress.latest_metrics)
            result = session.download_job_result(job_id, tmp_path / "results")
            model = campfire.from_safetensors((result / "models" / "final.safetensors").read_bytes())
            assert {name: array.shape for name, array in model.items()} == {"fc.weight": (10, 784), "fc.bias": (10,)}
            session.delete_job(job_id)
        output, _ = python.communicate(timeout=30)
        assert python.returncode == 0, output
        assert "round 2: trained on" in output and "the job ended" in output, output
    finally:
        python.kill()
        typescript.close()
