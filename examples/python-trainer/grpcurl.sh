#!/usr/bin/env bash
# Drives a sidecar's trainer API by hand with grpcurl (and jq): attach, take the
# next task, log a metric and a line, answer it with its own data plus a value,
# detach.
# The sidecar serves reflection, so grpcurl needs no .proto files.
#
#   campfire agent --client hospital-a --trainer-api 127.0.0.1:7450 &
#   examples/python-trainer/grpcurl.sh 127.0.0.1:7450      # or unix:/run/campfire/trainer.sock
#
# GRPCURL names the grpcurl binary (default: grpcurl on PATH); WAIT how long to
# wait for a task (default 60s). Small tasks only: the answer echoes the data
# inline, so a task whose tensors come in chunks or as a file is refused here.
set -euo pipefail
address=${1:-${CAMPFIRE_TRAINER_API:-127.0.0.1:7450}}
grpcurl=${GRPCURL:-grpcurl}
wait=${WAIT:-60s}
# grpcurl takes unix:<path> as a gRPC target as it is (its -unix flag fails to dial in 1.9.3).
call() { "$grpcurl" -plaintext -d "$2" "$address" "campfire.trainer.v1.TrainerService/$1"; }

echo "# what the sidecar serves"
"$grpcurl" -plaintext "$address" list

echo "# attach (a second trainer would be refused with AlreadyExists, naming this one)"
attached=$(call Attach '{"trainer_name": "grpcurl", "lease": "120s"}')
echo "$attached"
session=$(jq -r .sessionId <<<"$attached")

echo "# wait up to $wait for a task"
task=$(call GetTask "$(jq -n --arg s "$session" --arg w "$wait" '{session_id: $s, wait: $w}')")
echo "$task"
task_id=$(jq -r '.task.taskId // empty' <<<"$task")
if [[ -z $task_id ]]; then
  echo "no task within $wait" >&2
  exit 1
fi
if [[ $(jq -r .task.tensorsAt <<<"$task") != TENSOR_LOCATION_INLINE ]]; then
  echo "task $task_id has large tensors (not inline): answer it with a real trainer" >&2
  exit 1
fi

echo "# is it still running? (TASK_STATE_ABORTED would mean: stop, the site aborted it)"
call CheckTask "$(jq -n --arg s "$session" --arg t "$task_id" '{session_id: $s, task_id: $t}')"

echo "# log a metric and a line of text (campfire metrics / campfire logs show them)"
call Log "$(jq -n --arg s "$session" '{session_id: $s, values: {loss: 0.25}, meta: {step: 1}}')"
call Print "$(jq -n --arg s "$session" '{session_id: $s, message: "answered by hand with grpcurl", level: "LOG_LEVEL_INFO"}')"

echo "# answer: the task's data back, with values.answered_by = grpcurl"
call SubmitResult "$(jq --arg s "$session" --arg t "$task_id" \
  '{session_id: $s, task_id: $t, return_code: "RETURN_CODE_OK", data: (.task.data | .values = ((.values // {}) + {answered_by: "grpcurl"}))}' <<<"$task")"

echo "# detach"
call Detach "$(jq -n --arg s "$session" '{session_id: $s}')"
