import { connect } from "node:net";
import { rm, stat } from "node:fs/promises";
import { type sendUnaryData, Server, ServerCredentials, type ServerUnaryCall, type ServiceDefinition, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import type { Duration } from "../../gen/google/protobuf/duration.js";
import {
  LogLevel,
  ResultOutcome,
  TaskState,
  TensorLocation,
  TensorTransfer,
  type TrainerServiceServer,
  TrainerServiceService,
  type TrainerTask,
} from "../../gen/campfire/trainer/v1/trainer_service.js";
import { type Logger, silentLogger } from "../shared/logger.js";
import { nameProblem } from "../shared/names.js";
import { toServiceError } from "../site/transport/grpc-status.js";
import { isLoopbackAddress } from "../site/transport/listen-address.js";
import { reflectionServices } from "../site/transport/reflection.js";
import { InvalidTrainerRequest } from "./errors.js";
import { DEFAULT_LEASE_MS, type DeliveredTask, MAX_LEASE_MS, MAX_REQUEST_BYTES, MAX_WAIT_MS, MIN_LEASE_MS, type TrainerGateway } from "./gateway.js";

const SERVICE_NAME = "campfire.trainer.v1.TrainerService";

export interface TrainerApiServerOptions {
  /** host:port on loopback, or unix:<path>. */
  address: string;
  gateway: TrainerGateway;
  /** Listen beyond loopback anyway (the trainer API has no authentication). */
  allowRemote?: boolean;
  logger?: Logger;
}

/** The trainer API on the wire: campfire.trainer.v1.TrainerService over the gateway, with health and reflection. */
export class TrainerApiServer {
  private constructor(
    private readonly server: Server,
    readonly address: string,
    private readonly gateway: TrainerGateway,
  ) {}

  static async start(options: TrainerApiServerOptions): Promise<TrainerApiServer> {
    const logger = options.logger ?? silentLogger;
    const { address } = options;
    if (!isLoopbackAddress(address)) {
      if (!options.allowRemote) {
        throw new Error(
          `refusing to serve the trainer API on ${address}: it has no authentication, so anyone who reaches it gets this client's tasks and data and answers for it. ` +
            `Use 127.0.0.1:<port> or unix:<path> (the trainer runs beside the agent, in the same pod or machine), or pass --trainer-api-allow-remote if the network itself is protected`,
        );
      }
      logger.warn({ address }, "INSECURE: the trainer API listens beyond loopback (--trainer-api-allow-remote); anyone who reaches it acts as this client's trainer");
    }
    if (address.startsWith("unix:")) await removeStaleSocket(address.replace(/^unix:(\/\/)?/, ""));
    const server = new Server({ "grpc.max_receive_message_length": MAX_REQUEST_BYTES });
    server.addService(TrainerServiceService as unknown as ServiceDefinition, handlers(options.gateway) as unknown as UntypedServiceImplementation);
    new HealthImplementation({ "": "SERVING", [SERVICE_NAME]: "SERVING" }).addToServer(server);
    for (const [definition, implementation] of reflectionServices([SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"])) {
      server.addService(definition, implementation);
    }
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(address, ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(new Error(`could not serve the trainer API on ${address} (${error.message}): is another process listening there?`, { cause: error })) : resolve(bound),
      ),
    );
    const bound = address.startsWith("unix:") ? address : address.replace(/:\d+$/, `:${port}`);
    logger.info({ address: bound }, "trainer API listening");
    return new TrainerApiServer(server, bound, options.gateway);
  }

  /** Ends waiting calls (UNAVAILABLE) and stops listening. */
  async stop(): Promise<void> {
    this.gateway.close();
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
  }
}

/**
 * A unix socket file left by a sidecar that died is removed; one that a live
 * process still answers on is left alone (binding then fails, naming it).
 */
async function removeStaleSocket(path: string): Promise<void> {
  const info = await stat(path).catch(() => undefined);
  if (!info?.isSocket()) return;
  const live = await new Promise<boolean>((resolve) => {
    const socket = connect(path, () => {
      socket.destroy();
      resolve(true);
    }).on("error", () => resolve(false));
  });
  if (!live) await rm(path, { force: true });
}

function handlers(gateway: TrainerGateway): TrainerServiceServer {
  return {
    attach: unary((request) => {
      const problem = nameProblem("trainer_name", request.trainerName);
      if (problem) throw new InvalidTrainerRequest(problem);
      const leaseMs = durationMs("lease", request.lease, DEFAULT_LEASE_MS, MIN_LEASE_MS, MAX_LEASE_MS);
      const transfer = transferOf(request.tensorTransfer);
      const attached = gateway.attach(request.trainerName, leaseMs, transfer);
      return { ...attached, lease: durationOf(attached.leaseMs) };
    }),
    detach: unary((request) => {
      gateway.detach(required("session_id", request.sessionId));
      return {};
    }),
    getTask: unary(async (request, signal) => {
      const task = await gateway.getTask(required("session_id", request.sessionId), durationMs("wait", request.wait, 0, 0, MAX_WAIT_MS), signal);
      return { task: task ? trainerTask(task) : undefined };
    }),
    readTaskData: unary((request) =>
      gateway.readTaskData(required("session_id", request.sessionId), required("task_id", request.taskId), request.offset, request.length),
    ),
    writeResultData: unary((request) => ({
      stagedBytes: gateway.writeResultData(required("session_id", request.sessionId), required("task_id", request.taskId), request.offset, Buffer.from(request.chunk)),
    })),
    submitResult: unary(async (request) => {
      const outcome = await gateway.submitResult(required("session_id", request.sessionId), required("task_id", request.taskId), {
        returnCode: request.returnCode,
        message: request.message,
        data: request.data,
        staged: request.staged,
        tensorFile: request.tensorFile,
      });
      return { outcome: OUTCOMES[outcome.outcome], reason: outcome.reason };
    }),
    checkTask: unary(async (request, signal) => {
      const state = await gateway.checkTask(required("session_id", request.sessionId), required("task_id", request.taskId), durationMs("wait", request.wait, 0, 0, MAX_WAIT_MS), signal);
      return { state: STATES[state.state], reason: state.reason };
    }),
    log: unary((request) => ({ sent: gateway.log(required("session_id", request.sessionId), metricValues(request.values), request.meta) })),
    print: unary((request) => {
      const level = LEVELS[request.level];
      if (!level) throw new InvalidTrainerRequest(`level ${String(request.level)} is not a LogLevel value`);
      return { sent: gateway.print(required("session_id", request.sessionId), required("message", request.message), level) };
    }),
  };
}

const OUTCOMES = { accepted: ResultOutcome.RESULT_OUTCOME_ACCEPTED, task_aborted: ResultOutcome.RESULT_OUTCOME_TASK_ABORTED, not_accepted: ResultOutcome.RESULT_OUTCOME_NOT_ACCEPTED };
const STATES = { running: TaskState.TASK_STATE_RUNNING, aborted: TaskState.TASK_STATE_ABORTED, submitted: TaskState.TASK_STATE_SUBMITTED };
const LEVELS: Partial<Record<LogLevel, "debug" | "info" | "warn" | "error">> = {
  [LogLevel.LOG_LEVEL_UNSPECIFIED]: "info",
  [LogLevel.LOG_LEVEL_DEBUG]: "debug",
  [LogLevel.LOG_LEVEL_INFO]: "info",
  [LogLevel.LOG_LEVEL_WARN]: "warn",
  [LogLevel.LOG_LEVEL_ERROR]: "error",
};
const LOCATIONS = { inline: TensorLocation.TENSOR_LOCATION_INLINE, chunks: TensorLocation.TENSOR_LOCATION_CHUNKS, file: TensorLocation.TENSOR_LOCATION_FILE };

/** A unary handler: the answer, or the typed error's status; `signal` fires when the caller goes away. */
function unary<Request, Response>(handle: (request: Request, signal: AbortSignal) => Response | Promise<Response>) {
  return (call: ServerUnaryCall<Request, Response>, callback: sendUnaryData<Response>) => {
    const cancelled = new AbortController();
    call.on("cancelled", () => cancelled.abort());
    Promise.resolve()
      .then(() => handle(call.request, cancelled.signal))
      .then(
        (response) => callback(null, response),
        (error: unknown) => callback(toServiceError(error)),
      );
  };
}

function trainerTask(task: DeliveredTask): TrainerTask {
  return { ...task, tensorsAt: LOCATIONS[task.tensorsAt] };
}

function required(field: string, value: string): string {
  if (!value) throw new InvalidTrainerRequest(`${field} is required${field === "session_id" ? ": call Attach first and pass the session_id it returns" : ""}`);
  return value;
}

/** Log's values: at least one, each a number or a string. */
function metricValues(values: { [key: string]: unknown } | undefined): Record<string, number | string> {
  const entries = Object.entries(values ?? {});
  if (entries.length === 0) throw new InvalidTrainerRequest("values is required: at least one metric, for example {\"loss\": 0.12}");
  for (const [key, value] of entries) {
    if (typeof value !== "number" && typeof value !== "string") throw new InvalidTrainerRequest(`values.${key} must be a number or a string, got ${JSON.stringify(value)}`);
  }
  return Object.fromEntries(entries) as Record<string, number | string>;
}

function transferOf(transfer: TensorTransfer): "chunks" | "file" {
  switch (transfer) {
    case TensorTransfer.TENSOR_TRANSFER_UNSPECIFIED:
    case TensorTransfer.TENSOR_TRANSFER_CHUNKS:
      return "chunks";
    case TensorTransfer.TENSOR_TRANSFER_FILE:
      return "file";
    default:
      throw new InvalidTrainerRequest(`tensor_transfer ${String(transfer)} is not a TensorTransfer value`);
  }
}

/** A Duration field in milliseconds: `fallback` when unset or zero, else within [min, max]. */
function durationMs(field: string, duration: Duration | undefined, fallback: number, min: number, max: number): number {
  if (!duration || (duration.seconds === 0 && duration.nanos === 0)) return fallback;
  const ms = duration.seconds * 1000 + Math.floor(duration.nanos / 1e6);
  if (!Number.isFinite(ms) || ms < min || ms > max || duration.nanos < 0 || duration.nanos >= 1e9) {
    throw new InvalidTrainerRequest(`${field} must be between ${min / 1000} s and ${max / 1000} s, got ${duration.seconds}s ${duration.nanos}ns`);
  }
  return ms;
}

function durationOf(ms: number): Duration {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}
