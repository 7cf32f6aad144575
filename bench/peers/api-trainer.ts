// A trainer on the trainer API (TRAINER_API, host:port), in its own process,
// as a Python or Go trainer would be: it answers every task with its own data,
// reading large data in chunks and staging large results in chunks, through
// the stubs generated from proto/campfire/trainer/v1. Prints "ready" once
// attached; exits when stdin closes.
import { credentials, type ServiceError } from "@grpc/grpc-js";
import {
  type AttachRequest,
  type AttachResponse,
  type GetTaskRequest,
  type GetTaskResponse,
  type ReadTaskDataRequest,
  type ReadTaskDataResponse,
  type SubmitResultRequest,
  type SubmitResultResponse,
  TensorLocation,
  TrainerServiceClient,
  type WriteResultDataRequest,
  type WriteResultDataResponse,
} from "../../gen/campfire/trainer/v1/trainer_service.js";
import { decodeDataExchange, encodeDataExchange, INLINE_PAYLOAD_LIMIT } from "../../services/shared/payload.js";

const client = new TrainerServiceClient(process.env.TRAINER_API!, credentials.createInsecure(), {
  "grpc.max_receive_message_length": 8 * 1024 * 1024,
  "grpc.max_send_message_length": 8 * 1024 * 1024,
});
/** A generated unary method as a promise. */
const call = <Request, Response>(method: (request: Request, callback: (error: ServiceError | null, response: Response) => void) => unknown, request: Request) =>
  new Promise<Response>((resolve, reject) => method.call(client, request, (error, response) => (error ? reject(error) : resolve(response))));

const { sessionId, maxChunkBytes } = await call<AttachRequest, AttachResponse>(client.attach, { trainerName: "bench", lease: undefined, tensorTransfer: 0 });
console.log("ready");
let running = true;
process.stdin.on("close", () => {
  running = false;
  client.close();
  process.exit(0);
});
process.stdin.resume();

while (running) {
  const { task } = await call<GetTaskRequest, GetTaskResponse>(client.getTask, { sessionId, wait: { seconds: 10, nanos: 0 } });
  if (!task) continue;
  const { taskId } = task;
  let data = task.data!;
  if (task.tensorsAt === TensorLocation.TENSOR_LOCATION_CHUNKS) {
    const parts: Uint8Array[] = [];
    for (let offset = 0; offset < task.dataSizeBytes; ) {
      const { chunk } = await call<ReadTaskDataRequest, ReadTaskDataResponse>(client.readTaskData, { sessionId, taskId, offset, length: 0 });
      parts.push(chunk);
      offset += chunk.length;
    }
    data = decodeDataExchange(Buffer.concat(parts));
  }
  const encoded = data.tensors.length ? encodeDataExchange(data) : undefined;
  if (encoded && encoded.length > INLINE_PAYLOAD_LIMIT) {
    for (let offset = 0; offset < encoded.length; offset += maxChunkBytes) {
      await call<WriteResultDataRequest, WriteResultDataResponse>(client.writeResultData, { sessionId, taskId, offset, chunk: encoded.subarray(offset, offset + maxChunkBytes) });
    }
    await call<SubmitResultRequest, SubmitResultResponse>(client.submitResult, { sessionId, taskId, returnCode: 0, message: "", data: undefined, staged: true, tensorFile: "" });
  } else {
    await call<SubmitResultRequest, SubmitResultResponse>(client.submitResult, { sessionId, taskId, returnCode: 0, message: "", data, staged: false, tensorFile: "" });
  }
}
