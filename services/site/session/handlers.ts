import { once } from "node:events";
import { open, readdir } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import { type handleUnaryCall, type sendUnaryData, type ServerUnaryCall, type ServerWritableStream, status as Status } from "@grpc/grpc-js";
import { JobMeta } from "../../../gen/campfire/admin/v1/job.js";
import {
  type ClientInfo,
  type DownloadJobResultRequest,
  type DownloadJobResultResponse,
  type MonitorJobRequest,
  type MonitorJobResponse,
  MonitorReturnCode,
  type SessionServiceServer,
} from "../../../gen/campfire/admin/v1/session_service.js";
import type { AuditLog } from "../../security/audit.js";
import type { SiteTrust } from "../../security/site-trust.js";
import type { Logger } from "../../shared/logger.js";
import { CHUNK_BYTES } from "../../shared/payload.js";
import type { AgentHub } from "../agent-hub.js";
import type { SiteError } from "../errors.js";
import { InvalidArgument, JobNotDone, JobTooLarge } from "../jobs/errors.js";
import { checkSubmittedSignature } from "../jobs/signature-check.js";
import type { JobManager } from "../jobs/manager.js";
import { type Caller, isFinished, jobDefinitionToDict, jobMetaToDict, statusName } from "../jobs/model.js";
import { RefusedMessage } from "../transport/decoding.js";
import { statusOf, toServiceError } from "../transport/grpc-status.js";
import type { Authenticator } from "./auth.js";

export interface SessionServiceOptions {
  jobs: JobManager;
  hub: AgentHub;
  auth: Authenticator;
  siteName: string;
  startTime: Date;
  logger: Logger;
  /** Every call, allowed or denied, is recorded here before its reply. */
  audit: AuditLog;
  /** With TLS: who callers with a certificate are. */
  trust: SiteTrust | undefined;
}

/**
 * The gRPC handlers of campfire.admin.v1.SessionService: authentication,
 * request checks, framing and status codes. The jobs themselves are the
 * JobManager's business.
 */
export function sessionServiceHandlers(options: SessionServiceOptions): SessionServiceServer {
  const { jobs, hub, auth, logger } = options;

  /** Decodes, authenticates, runs `body`, and answers with its result or its error's status. */
  function unary<Req, Res>(method: string, body: (request: Req, caller: Caller) => Res | Promise<Res>): handleUnaryCall<Req, Res> {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      void (async () => {
        try {
          const [request, caller] = accept(call.request as Req | RefusedMessage, call.metadata);
          callback(null, await body(request, caller));
        } catch (error) {
          refuse(method, error);
          callback(toServiceError(error));
        }
      })();
    };
  }

  function accept<Req>(request: Req | RefusedMessage, metadata: ServerUnaryCall<Req, unknown>["metadata"]): [Req, Caller] {
    if (request instanceof RefusedMessage) {
      if (request.reason === "oversized") {
        throw new JobTooLarge(`${request.description}: this site accepts jobs of up to ${jobs.maxJobBytes} bytes (campfire site --max-job-mb); keep large data out of the job folder`);
      }
      throw new InvalidArgument(request.description);
    }
    return [request, auth.authenticate(metadata)];
  }

  function refuse(method: string, error: unknown): void {
    const code = statusOf(error);
    const fields = { method, err: error instanceof Error ? { type: error.name, message: error.message } : error };
    if (code === Status.INTERNAL) logger.error({ ...fields, err: error }, "session call failed");
    else logger.info(fields, "session call refused");
  }

  return {
    submitJob: unary("SubmitJob", async (request, caller) => {
      if (!request.definition) throw new InvalidArgument("definition: is not set; send the job's JobDefinition");
      checkSubmittedSignature(request.definition, options.trust, caller);
      return { jobId: await jobs.submit(request.definition, caller) };
    }),

    cloneJob: unary("CloneJob", async (request, caller) => ({ jobId: await jobs.clone(jobIdOf(request), caller) })),

    getJobMeta: unary("GetJobMeta", (request) => ({ meta: jobs.meta(jobIdOf(request)) })),

    listJobs: unary("ListJobs", (request, caller) => {
      const metas = jobs.list(
        { allSubmitters: request.allSubmitters, namePrefix: request.namePrefix, idPrefix: request.idPrefix, newest: request.newest, reverse: request.reverse },
        caller,
      );
      return { jobs: request.detailed ? metas : metas.map(summary) };
    }),

    abortJob: unary("AbortJob", async (request, caller) => ({ status: await jobs.abort(jobIdOf(request), caller, request.reason) })),

    deleteJob: unary("DeleteJob", async (request, caller) => {
      await jobs.delete(jobIdOf(request), caller);
      return {};
    }),

    getSystemInfo: unary("GetSystemInfo", () => {
      const clients = new Map<string, ClientInfo>();
      for (const agent of hub.agents()) {
        if (!agent.connected) continue;
        const client = clients.get(agent.clientName) ?? {
          name: agent.clientName,
          lastConnectTime: hub.lastConnectTimes().get(agent.clientName),
          agentIds: [],
          resources: {},
        };
        client.agentIds.push(agent.agentId);
        for (const [name, amount] of Object.entries(agent.resources)) client.resources[name] = Math.max(amount, client.resources[name] ?? 0);
        clients.set(agent.clientName, client);
      }
      return {
        site: { name: options.siteName, status: jobs.stopping ? "stopping" : "started", startTime: options.startTime },
        clients: [...clients.values()].sort((a, b) => a.name.localeCompare(b.name)),
        jobs: jobs.runningJobs().map(({ jobId, appName, status }) => ({ jobId, appName, status })),
      };
    }),

    async downloadJobResult(call: ServerWritableStream<DownloadJobResultRequest, DownloadJobResultResponse>) {
      const cancelled = new AbortController();
      call.once("cancelled", () => cancelled.abort());
      try {
        const [request] = accept(call.request as DownloadJobResultRequest | RefusedMessage, call.metadata);
        const jobId = jobIdOf(request);
        const meta = jobs.meta(jobId);
        if (!isFinished(meta.status)) {
          throw new JobNotDone(`job ${jobId} is ${statusName(meta.status)}: its result can be downloaded once it has finished; wait with: campfire monitor ${jobId}`);
        }
        let files = 2;
        // The definition and meta first: a result says what produced it (result layout: workflows/model-files.ts).
        let bytes = await streamBytes(call, "job/definition.json", JSON.stringify(jobDefinitionToDict(await jobs.definition(jobId)), null, 2), cancelled.signal);
        bytes += await streamBytes(call, "job/meta.json", JSON.stringify(jobMetaToDict(meta), null, 2), cancelled.signal);
        for (const path of await filesUnder(meta.resultLocation)) {
          if (call.cancelled) return;
          bytes += await streamFile(call, meta.resultLocation, path, cancelled.signal);
          files++;
        }
        call.end();
        logger.info({ job: jobId, files, bytes }, "job result downloaded");
      } catch (error) {
        if (call.cancelled) return;
        refuse("DownloadJobResult", error);
        call.emit("error", toServiceError(error));
      }
    },

    monitorJob(call: ServerWritableStream<MonitorJobRequest, MonitorJobResponse>) {
      try {
        const [request] = accept(call.request as MonitorJobRequest | RefusedMessage, call.metadata);
        const jobId = jobIdOf(request);
        const timeoutMs = request.timeout ? request.timeout.seconds * 1000 + request.timeout.nanos / 1e6 : 0;
        if (!(timeoutMs >= 0)) throw new InvalidArgument(`timeout: ${JSON.stringify(request.timeout)} must not be negative`);
        monitor(call, jobs, jobId, timeoutMs);
      } catch (error) {
        refuse("MonitorJob", error);
        call.emit("error", toServiceError(error));
      }
    },
  };
}

/**
 * Streams the job's meta now and on every change, until it finishes
 * (JOB_FINISHED), the timeout passes (TIMEOUT), or the caller goes. When the
 * caller reads slower than changes come, only the latest unsent change is
 * kept: a watcher wants the present, not a backlog.
 */
function monitor(call: ServerWritableStream<MonitorJobRequest, MonitorJobResponse>, jobs: JobManager, jobId: string, timeoutMs: number): void {
  let ended = false;
  let writable = true;
  let pending: JobMeta | undefined;
  const write = (meta: JobMeta, returnCode: MonitorReturnCode) => call.write({ meta, returnCode, sentAt: new Date() });
  const stop = () => {
    ended = true;
    clearTimeout(timer);
    unwatch();
  };
  const finish = (meta: JobMeta, returnCode: MonitorReturnCode) => {
    if (ended) return;
    stop();
    write(meta, returnCode);
    call.end();
  };
  const send = (meta: JobMeta) => {
    if (ended) return;
    if (isFinished(meta.status)) return finish(meta, MonitorReturnCode.MONITOR_RETURN_CODE_JOB_FINISHED);
    if (!writable) return void (pending = meta);
    writable = write(meta, MonitorReturnCode.MONITOR_RETURN_CODE_UNSPECIFIED);
  };
  call.on("drain", () => {
    writable = true;
    const next = pending;
    pending = undefined;
    if (next) send(next);
  });
  const unwatch = jobs.watch(jobId, {
    changed: send,
    ended: (error: SiteError) => {
      if (ended) return;
      stop();
      call.emit("error", toServiceError(error));
    },
  });
  const timer = timeoutMs > 0 ? setTimeout(() => finish(jobs.meta(jobId), MonitorReturnCode.MONITOR_RETURN_CODE_TIMEOUT), timeoutMs) : undefined;
  call.once("cancelled", stop);
  send(jobs.meta(jobId));
}

/** Sends one file in chunks, waiting for 'drain' whenever the stream's buffer is full. Returns the bytes sent. */
async function streamFile(call: ServerWritableStream<unknown, DownloadJobResultResponse>, root: string, path: string, signal: AbortSignal): Promise<number> {
  const handle = await open(join(root, ...path.split("/")), "r");
  try {
    const fileSize = (await handle.stat()).size;
    return await streamChunks(call, path, fileSize, async (chunk, offset) => (await handle.read(chunk, 0, chunk.length, offset)).bytesRead, signal);
  } finally {
    await handle.close();
  }
}

/** Streams a file made on the fly. */
function streamBytes(call: ServerWritableStream<unknown, DownloadJobResultResponse>, path: string, content: string, signal: AbortSignal): Promise<number> {
  const bytes = Buffer.from(content);
  return streamChunks(call, path, bytes.length, async (chunk, offset) => bytes.copy(chunk, 0, offset), signal);
}

/** Writes a file of `fileSize` bytes in chunks filled by `read`, waiting for 'drain' when the stream is full. */
async function streamChunks(
  call: ServerWritableStream<unknown, DownloadJobResultResponse>,
  path: string,
  fileSize: number,
  read: (chunk: Buffer, offset: number) => Promise<number>,
  signal: AbortSignal,
): Promise<number> {
  let offset = 0;
  do {
    const chunk = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, fileSize - offset));
    const bytesRead = chunk.length ? await read(chunk, offset) : 0;
    if (!call.write({ path, fileSize, offset, chunk: chunk.subarray(0, bytesRead) })) await once(call, "drain", { signal });
    offset += bytesRead;
    if (bytesRead === 0) break;
  } while (offset < fileSize);
  return offset;
}

/** Every regular file under `root`, as sorted '/'-separated relative paths; none when `root` does not exist. */
async function filesUnder(root: string): Promise<string[]> {
  try {
    const entries = await readdir(root, { recursive: true, withFileTypes: true });
    return entries
      .filter((entry) => entry.isFile())
      .map((entry) => relative(root, join(entry.parentPath, entry.name)).split(sep).join("/"))
      .sort();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
}

function jobIdOf(request: { jobId: string }): string {
  if (!request.jobId) throw new InvalidArgument("job_id: is empty; pass the id that submit returned (campfire list shows them)");
  return request.jobId;
}

/** The summary a listing shows unless asked for details. */
function summary(meta: JobMeta): JobMeta {
  const { jobId, name, status, submitter, submitTime, submitTimeIso, startTime, duration, endReason } = meta;
  return JobMeta.fromPartial({ jobId, name, status, submitter, submitTime, submitTimeIso, startTime, duration, endReason });
}
