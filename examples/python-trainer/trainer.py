#!/usr/bin/env python3
"""A federated trainer in Python, beside a `campfire agent --trainer-api` sidecar.

It knows nothing of Campfire but proto/: it generates its own stubs from
proto/campfire/trainer/v1 with grpcio-tools, then loops on the trainer API
(Attach, GetTask, ReadTaskData, CheckTask, Log, Print, WriteResultData,
SubmitResult)
and trains with numpy. Its model is a linear regressor, tensor "w" (float32,
[features]), fitted by gradient descent to this client's own data, which a
seed derives; any other tensor of the task (a big "embedding", for example) is
returned shifted by --shift, so that a test can predict the federated average.
"validate" tasks are answered with the model's loss and accuracy (1 / (1 + loss)).

    python trainer.py --address 127.0.0.1:7450 --name resnet-trainer

Output: one line per event on stdout ("attached ...", "task ...", "result ...",
"aborted ..."), for people and for tests.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

HERE = Path(__file__).resolve().parent
PROTOS = ["campfire/trainer/v1/trainer_service.proto", "campfire/common/v1/exchange.proto", "campfire/common/v1/tensor.proto", "campfire/common/v1/return_code.proto"]


def generate_stubs(proto_dir: Path, out_dir: Path) -> None:
    """Generates the Python stubs of the trainer API into out_dir, once (atomically, so concurrent starts are safe)."""
    if (out_dir / "campfire" / "trainer" / "v1" / "trainer_service_pb2_grpc.py").exists():
        return
    from importlib.resources import files

    from grpc_tools import protoc

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".stubs-", dir=out_dir.parent))
    well_known = str(files("grpc_tools") / "_proto")
    code = protoc.main(["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={staging}", f"--grpc_python_out={staging}", *PROTOS])
    if code != 0:
        sys.exit(f"protoc failed ({code}) generating stubs from {proto_dir}")
    # Regular packages, so that these stubs win over any other "campfire"
    # package installed (the campfire-fl client is one).
    for folder in [staging / "campfire", *(path for path in (staging / "campfire").rglob("*") if path.is_dir())]:
        (folder / "__init__.py").touch()
    try:
        os.rename(staging, out_dir)
    except OSError:
        pass  # another trainer generated them first


parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--address", default=os.environ.get("CAMPFIRE_TRAINER_API", "127.0.0.1:7450"), help="the sidecar's trainer API: host:port or unix:<path>")
parser.add_argument("--name", default="python-trainer", help="the trainer's name, the same across restarts")
parser.add_argument("--transfer", choices=["chunks", "file"], default="chunks", help="tensors inline or in chunks over gRPC, or as files in the shared directory")
parser.add_argument("--seed", type=int, default=1, help="derives this client's data")
parser.add_argument("--steps", type=int, default=10, help="gradient steps per round (also the result's NUM_STEPS_CURRENT_ROUND)")
parser.add_argument("--shift", type=float, default=1.0, help="added to every tensor other than w")
parser.add_argument("--lease", type=float, default=5.0, help="the session lease in seconds")
parser.add_argument("--crash-after-receive", action="store_true", help="exit abruptly (status 3) after receiving a task for the first time, before answering it")
parser.add_argument("--hold", action="store_true", help="do not train: hold each task until the site aborts it")
parser.add_argument("--tasks", type=int, default=0, help="exit after answering this many tasks (0: run until the sidecar goes away)")
parser.add_argument("--proto", type=Path, default=HERE.parent.parent / "proto", help="the proto/ folder to generate stubs from")
parser.add_argument("--stubs", type=Path, default=HERE / "generated", help="where to generate the stubs")
args = parser.parse_args()

generate_stubs(args.proto, args.stubs)
sys.path.insert(0, str(args.stubs))
from campfire.common.v1 import exchange_pb2, return_code_pb2, tensor_pb2  # noqa: E402
from campfire.trainer.v1 import trainer_service_pb2 as api  # noqa: E402
from campfire.trainer.v1 import trainer_service_pb2_grpc as api_grpc  # noqa: E402
from google.protobuf import duration_pb2  # noqa: E402

DTYPES = {tensor_pb2.D_TYPE_FLOAT32: np.float32, tensor_pb2.D_TYPE_FLOAT64: np.float64, tensor_pb2.D_TYPE_INT32: np.int32, tensor_pb2.D_TYPE_INT64: np.int64}
SAFETENSORS_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}


def say(line: str) -> None:
    print(line, flush=True)


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(int(value * 1000))
    return duration


# --- tensors: protobuf Tensor and safetensors files <-> numpy ---------------------------------

def to_numpy(tensor: tensor_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(tensor.data, dtype=np.dtype(DTYPES[tensor.dtype]).newbyteorder("<")).reshape(tuple(tensor.shape)).copy()


def to_tensor(name: str, array: np.ndarray) -> tensor_pb2.Tensor:
    array = np.ascontiguousarray(array, dtype=np.float32)
    return tensor_pb2.Tensor(name=name, dtype=tensor_pb2.D_TYPE_FLOAT32, shape=list(array.shape), data=array.astype("<f4").tobytes())


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    raw = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    body = raw[8 + length :]
    arrays = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        arrays[name] = np.frombuffer(body[begin:end], dtype=np.dtype(SAFETENSORS_DTYPES[entry["dtype"]]).newbyteorder("<")).reshape(entry["shape"]).copy()
    return arrays


def write_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    header, blobs, offset = {}, [], 0
    for name, array in arrays.items():
        blob = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-(8 + len(encoded)) % 8)
    partial = path.with_suffix(".partial")
    partial.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))
    os.replace(partial, path)


# --- the trainer API -----------------------------------------------------------------------------

class Sidecar:
    def __init__(self, address: str):
        self.stub = api_grpc.TrainerServiceStub(grpc.insecure_channel(address))
        self.session = ""
        self.attach_info = None

    def attach(self) -> None:
        transfer = api.TENSOR_TRANSFER_FILE if args.transfer == "file" else api.TENSOR_TRANSFER_CHUNKS
        deadline = time.monotonic() + 60
        while True:
            try:
                info = self.stub.Attach(api.AttachRequest(trainer_name=args.name, lease=seconds(args.lease), tensor_transfer=transfer), timeout=10)
                break
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.ALREADY_EXISTS:
                    say(f"refused {error.code().name}: {error.details()}")
                    sys.exit(4)
                if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the sidecar is not listening yet
        self.session, self.attach_info = info.session_id, info
        say(f"attached session={info.session_id} client={info.client_name} replaced={str(info.replaced_session).lower()} held_task={info.held_task_id or '-'}")

    def task_data(self, task: api.TrainerTask) -> tuple[exchange_pb2.DataExchange, dict[str, np.ndarray]]:
        """The task's DataExchange and its tensors as numpy arrays, wherever the sidecar put them."""
        if task.tensors_at == api.TENSOR_LOCATION_CHUNKS:
            encoded = bytearray()
            while len(encoded) < task.data_size_bytes:
                encoded += self.stub.ReadTaskData(api.ReadTaskDataRequest(session_id=self.session, task_id=task.task_id, offset=len(encoded)), timeout=30).chunk
            data = exchange_pb2.DataExchange.FromString(bytes(encoded))
            return data, {tensor.name: to_numpy(tensor) for tensor in data.tensors}
        if task.tensors_at == api.TENSOR_LOCATION_FILE:
            return task.data, read_safetensors(task.tensor_file)
        return task.data, {tensor.name: to_numpy(tensor) for tensor in task.data.tensors}

    def submit(self, task: api.TrainerTask, kind: int, arrays: dict[str, np.ndarray], meta: dict, values: dict | None = None) -> api.SubmitResultResponse:
        """Sends the result inline, staged in chunks when large, or as a file in the shared directory."""
        result = exchange_pb2.DataExchange(kind=kind)
        result.meta.update(meta)
        if values:
            result.values.update(values)
        request = api.SubmitResultRequest(session_id=self.session, task_id=task.task_id, return_code=return_code_pb2.RETURN_CODE_OK)
        if args.transfer == "file" and arrays:
            path = Path(self.attach_info.shared_dir) / f"result-{task.task_id}.safetensors"
            write_safetensors(path, arrays)
            request.data.CopyFrom(result)
            request.tensor_file = str(path)
        else:
            result.tensors.extend(to_tensor(name, array) for name, array in arrays.items())
            encoded = result.SerializeToString()
            if len(encoded) <= self.attach_info.max_inline_bytes:
                request.data.CopyFrom(result)
            else:
                chunk = self.attach_info.max_chunk_bytes
                for offset in range(0, len(encoded), chunk):
                    self.stub.WriteResultData(api.WriteResultDataRequest(session_id=self.session, task_id=task.task_id, offset=offset, chunk=encoded[offset : offset + chunk]), timeout=30)
                request.staged = True
        return self.stub.SubmitResult(request, timeout=60)

    def log(self, values: dict, message: str) -> None:
        """Metrics for the job's history, and a line of text for `campfire logs`."""
        request = api.LogRequest(session_id=self.session)
        request.values.update(values)
        self.stub.Log(request, timeout=10)
        self.stub.Print(api.PrintRequest(session_id=self.session, message=message, level=api.LOG_LEVEL_INFO), timeout=10)

    def wait_for_abort(self, task: api.TrainerTask) -> str:
        while True:
            state = self.stub.CheckTask(api.CheckTaskRequest(session_id=self.session, task_id=task.task_id, wait=seconds(2)), timeout=10)
            if state.state != api.TASK_STATE_RUNNING:
                return f"{api.TaskState.Name(state.state)} {state.reason}"


# --- training ------------------------------------------------------------------------------------

def local_data(features: int) -> tuple[np.ndarray, np.ndarray]:
    """This client's data: the same true model everywhere, its own samples and noise."""
    truth = np.linspace(-1, 1, features, dtype=np.float32)
    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(256, features)).astype(np.float32)
    return x, x @ truth + rng.normal(scale=0.01, size=256).astype(np.float32)


def evaluate(arrays: dict[str, np.ndarray]) -> float:
    """The global model's mean squared error on this client's data ("validate" tasks; accuracy is 1 / (1 + loss))."""
    w = arrays.get("w", np.zeros(8, dtype=np.float32))
    x, y = local_data(w.shape[0])
    return float(np.mean((x @ w - y) ** 2))


def train(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float, float]:
    w = arrays.get("w", np.zeros(8, dtype=np.float32))
    x, y = local_data(w.shape[0])
    loss_before = float(np.mean((x @ w - y) ** 2))
    for _ in range(args.steps):
        w = w - 0.05 * (2 / len(y)) * x.T @ (x @ w - y)
    trained = {name: array + np.float32(args.shift) for name, array in arrays.items() if name != "w"}
    trained["w"] = w.astype(np.float32)
    return trained, loss_before, float(np.mean((x @ w - y) ** 2))


def main() -> None:
    sidecar = Sidecar(args.address)
    sidecar.attach()
    answered = 0
    while args.tasks == 0 or answered < args.tasks:
        try:
            reply = sidecar.stub.GetTask(api.GetTaskRequest(session_id=sidecar.session, wait=seconds(10)), timeout=20)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                say("the sidecar is gone")
                return
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                say(f"session ended: {error.details()}")
                sys.exit(5)
            raise
        if not reply.HasField("task"):
            continue
        task = reply.task
        data, arrays = sidecar.task_data(task)
        round_number = int(data.meta["current_round"]) if "current_round" in data.meta else 0
        say(f"task {task.task_id} name={task.task_name} round={round_number} delivery={task.delivery} tensors_at={api.TensorLocation.Name(task.tensors_at)} tensors={','.join(sorted(arrays))}")
        if args.crash_after_receive and task.delivery == 1:
            say("crashing")
            os._exit(3)
        if args.hold:
            say(f"aborted {task.task_id}: {sidecar.wait_for_abort(task)}")
            continue
        if task.task_name == "validate":
            loss = evaluate(arrays)
            outcome = sidecar.submit(task, exchange_pb2.DATA_KIND_METRICS, {}, {}, values={"loss": loss, "accuracy": 1 / (1 + loss)})
            answered += 1
            say(f"result {task.task_id} round={round_number} validation_loss={loss:.5f} outcome={api.ResultOutcome.Name(outcome.outcome)} {outcome.reason}".rstrip())
            continue
        trained, loss_before, loss_after = train(arrays)
        sidecar.log({"loss_before": loss_before, "loss": loss_after}, f"round {round_number}: loss {loss_before:.4f} -> {loss_after:.4f} in {args.steps} steps")
        outcome = sidecar.submit(task, exchange_pb2.DATA_KIND_WEIGHTS, trained, {"NUM_STEPS_CURRENT_ROUND": args.steps})
        answered += 1
        say(f"result {task.task_id} round={round_number} loss={loss_after:.5f} outcome={api.ResultOutcome.Name(outcome.outcome)} {outcome.reason}".rstrip())
    sidecar.stub.Detach(api.DetachRequest(session_id=sidecar.session), timeout=10)


if __name__ == "__main__":
    main()
