"""The MNIST example trainer in Python with numpy: a drop-in for examples/mnist/trainer.ts.

    node --import tsx examples/mnist/write-shard.ts --client-index 0 --num-clients 3 --out shard.safetensors
    python mnist_agent.py --site 127.0.0.1:7443 --client-name site-1 --shard shard.safetensors

It answers the tasks the TypeScript trainer answers, with the same models on
the wire, so it can serve a FedAvg job beside TypeScript (and Go) trainers:
- "train": minibatch SGD with cross-entropy from the task's weights (zeros for
  softmax when the first round sends none), returning the weights, the metrics
  in values, and NUM_STEPS_CURRENT_ROUND = the samples it trained on (FedAvg's
  weight);
- "validate": accuracy and loss of the task's weights on its validation shard;
- "submit_model": its latest weights.
Models: softmax (fc.weight [10, 784], fc.bias [10]) or mlp (fc1 [64, 784],
fc2 [10, 64]), PyTorch's [out, in] layout, chosen by the weights that arrive.
It prints one line per task and exits when the job ends.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import campfire
from campfire.common.v1 import exchange_pb2, return_code_pb2

NUM_CLASSES = 10
PIXELS = 28 * 28
HIDDEN = 64


def init_model(kind: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if kind == "softmax":
        return {"fc.weight": np.zeros((NUM_CLASSES, PIXELS), np.float32), "fc.bias": np.zeros(NUM_CLASSES, np.float32)}
    return {
        "fc1.weight": rng.uniform(-1, 1, (HIDDEN, PIXELS)).astype(np.float32) * np.float32(np.sqrt(6 / PIXELS)),
        "fc1.bias": np.zeros(HIDDEN, np.float32),
        "fc2.weight": rng.uniform(-1, 1, (NUM_CLASSES, HIDDEN)).astype(np.float32) * np.float32(np.sqrt(6 / (HIDDEN + NUM_CLASSES))),
        "fc2.bias": np.zeros(NUM_CLASSES, np.float32),
    }


def forward(model: dict[str, np.ndarray], images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities, and the hidden activations of an mlp."""
    if "fc.weight" in model:
        logits, hidden = images @ model["fc.weight"].T + model["fc.bias"], None
    else:
        hidden = np.maximum(images @ model["fc1.weight"].T + model["fc1.bias"], 0)
        logits = hidden @ model["fc2.weight"].T + model["fc2.bias"]
    logits = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    return probabilities / probabilities.sum(axis=1, keepdims=True), hidden


def evaluate(model: dict[str, np.ndarray], images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    probabilities, _ = forward(model, images)
    loss = float(-np.log(probabilities[np.arange(len(labels)), labels] + 1e-12).mean())
    return float((probabilities.argmax(axis=1) == labels).mean()), loss


def train(model: dict[str, np.ndarray], images: np.ndarray, labels: np.ndarray, epochs: int, learning_rate: float, batch_size: int, rng: np.random.Generator, task: campfire.Task) -> int:
    samples = 0
    for _ in range(epochs):
        order = rng.permutation(len(labels))
        for start in range(0, len(order), batch_size):
            task.raise_if_aborted()
            batch = order[start : start + batch_size]
            x, y = images[batch], labels[batch]
            probabilities, hidden = forward(model, x)
            grad = probabilities
            grad[np.arange(len(y)), y] -= 1
            grad /= len(y)  # d loss / d logits
            step = np.float32(learning_rate)
            if hidden is None:
                model["fc.weight"] -= step * (grad.T @ x)
                model["fc.bias"] -= step * grad.sum(axis=0)
            else:
                grad_hidden = (grad @ model["fc2.weight"]) * (hidden > 0)
                model["fc2.weight"] -= step * (grad.T @ hidden)
                model["fc2.bias"] -= step * grad.sum(axis=0)
                model["fc1.weight"] -= step * (grad_hidden.T @ x)
                model["fc1.bias"] -= step * grad_hidden.sum(axis=0)
            samples += len(y)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="127.0.0.1:7443")
    parser.add_argument("--client-name", required=True)
    parser.add_argument("--shard", required=True, help="this client's data, from examples/mnist/write-shard.ts")
    parser.add_argument("--kit", help="the client's kit folder: mutual TLS")
    parser.add_argument("--model", choices=["softmax", "mlp"], default="softmax", help="the kind of fresh weights, when a first round sends none")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, help="learning rate (default 0.3 for softmax, 0.1 for mlp)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    shard = campfire.from_safetensors(Path(args.shard).read_bytes())
    images, labels = shard["train_images"], shard["train_labels"].astype(np.int64)
    held_out, held_out_labels = shard["validation_images"], shard["validation_labels"].astype(np.int64)
    rng = np.random.default_rng(args.seed)
    latest: dict[str, np.ndarray] | None = None
    print(f"loaded {len(labels)} training and {len(held_out_labels)} validation images", flush=True)

    with campfire.Agent(args.site, args.client_name, kit=args.kit, task_names=("train", "validate", "submit_model")) as agent:
        for task in agent.tasks():
            arrays = task.arrays()
            model = {name: array.copy() for name, array in arrays.items()} if arrays else None
            if task.task_name == "train":
                model = model or init_model(args.model, np.random.default_rng(args.seed))
                learning_rate = args.lr or (0.3 if "fc.weight" in model else 0.1)
                try:
                    samples = train(model, images, labels, args.epochs, learning_rate, args.batch_size, rng, task)
                except campfire.TaskAborted:
                    print(f"task {task.task_id} aborted", flush=True)
                    continue
                latest = model
                accuracy, loss = evaluate(model, held_out, held_out_labels)
                round_ = task.meta.get("current_round", 0)
                result = campfire.data_exchange(model, meta={"current_round": round_, "NUM_STEPS_CURRENT_ROUND": samples}, values={"validation_accuracy": accuracy, "validation_loss": loss, "samples": len(labels)})
                print(f"round {round_:.0f}: trained on {samples} samples, validation accuracy {accuracy:.3f}", flush=True)
                task.submit(result)
            elif task.task_name == "validate" and (model or latest):
                accuracy, loss = evaluate(model or latest, held_out, held_out_labels)
                task.submit(campfire.data_exchange({}, values={"accuracy": accuracy, "loss": loss}, meta={"samples": len(held_out_labels)}, kind=exchange_pb2.DATA_KIND_METRICS))
            elif task.task_name == "submit_model" and latest:
                task.submit(latest)
            else:
                task.submit(None, return_code=return_code_pb2.RETURN_CODE_TASK_UNSUPPORTED if task.task_name not in ("validate", "submit_model") else return_code_pb2.RETURN_CODE_EMPTY_RESULT)
    print("the job ended", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
