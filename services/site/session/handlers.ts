import { once } from "node:events";
import { open, readdir } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import type { handleUnaryCall, Metadata, sendUnaryData, ServerReadableStream, ServerUnaryCall, ServerWritableStream } from "@grpc/grpc-js";
import { JobMeta } from "../../../gen/campfire/admin/v1/job.js";
import {
  ArtifactState,
  type ClientInfo,
  type DownloadJobResultRequest,
  type DownloadJobResultResponse,

  type MonitorJobRequest,
  type MonitorJobResponse,
  type SessionServiceServer,
  type UploadArtifactRequest,
  type UploadArtifactResponse,
} from "../../../gen/campfire/admin/v1/session_service.js";
import type { AuditLog } from "../../security/audit.js";
import type { Authorizer } from "../../security/authorization.js";
import type { SiteTrust } from "../../security/site-trust.js";
import type { Logger } from "../../shared/logger.js";
import { CHUNK_BYTES } from "../../shared/payload.js";
import type { AgentHub } from "../agent-hub.js";
import type { GetJobLogsRequest, GetJobLogsResponse } from "../../../gen/campfire/admin/v1/metrics.js";
import { readJobHistory } from "../history/job-history.js";
import { InvalidArgument, JobNotDone, JobTooLarge } from "../jobs/errors.js";
import { checkSubmittedSignature } from "../jobs/signature-check.js";
import type { JobManager } from "../jobs/manager.js";
import { isFinished, jobDefinitionToDict, jobMetaToDict, statusName } from "../jobs/model.js";
import { RefusedMessage } from "../transport/decoding.js";
import { toServiceError } from "../transport/grpc-status.js";
import { peerOf } from "../transport/peer.js";
import { sha256Problem } from "../artifacts/store.js";
import { UploadInterrupted } from "../artifacts/errors.js";
import { AdminCall, type AdminGate } from "./admin-call.js";
import { streamJobLogs } from "./job-logs.js";
import { monitorJob } from "./monitor.js";
import { receiveArtifact, uploadOwner } from "./artifact-upload.js";
import type { Authenticator } from "./auth.js";

export interface SessionServiceOptions {
  jobs: JobManager;
  hub: AgentHub;
  auth: Authenticator;
  /** Who may do what (roles, rights, scopes). */
  authorizer: Authorizer;
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
 * authorization, audit, request checks, framing and status codes. The jobs
 * themselves are the JobManager's business.
 */
export function sessionServiceHandlers(options: SessionServiceOptions): SessionServiceServer {
  const { jobs, hub } = options;
  const gate: AdminGate = options;

  /**
   * Authenticates, decodes, runs `body` (which asks for the rights it needs),
   * records the outcome in the audit log, then answers with the result or the
   * error's status.
   */
  function unary<Req, Res>(method: string, body: (request: Req, call: AdminCall) => Res | Promise<Res>): handleUnaryCall<Req, Res> {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      void (async () => {
        const admin = new AdminCall(gate, method, peerOf(call));
        let response: Res;
        try {
          response = await body(accept(admin, call.request as Req | RefusedMessage, call.metadata), admin);
        } catch (error) {
          await admin.refused(error);
          return callback(toServiceError(error));
        }
        await admin.allowed();
        callback(null, response);
      })();
    };
  }

  /** Who calls first, then what it sent: a stranger learns nothing about the request's shape. */
  function accept<Req>(admin: AdminCall, request: Req | RefusedMessage, metadata: Metadata): Req {
    admin.authenticate(metadata);
    if (request instanceof RefusedMessage) {
      if (request.reason === "oversized") {
        throw new JobTooLarge(`${request.description}: this site accepts job definitions of up to ${jobs.maxJobBytes} bytes (campfire site --max-job-mb); upload large app files as artifacts (UploadArtifact; campfire submit does) and keep configs small`);
      }
      throw new InvalidArgument(request.description);
    }
    return request;
  }

  /** Starts a server-streaming call: checks it with `check`, records it allowed, then lets `start` stream; a refusal ends the stream with its status. */
  function streaming<Req, Res>(
    method: string,
    call: ServerWritableStream<Req, Res>,
    check: (request: Req, admin: AdminCall) => void,
    start: (request: Req) => void | Promise<void>,
  ): void {
    const admin = new AdminCall(gate, method, peerOf(call));
    void (async () => {
      let request: Req;
      try {
        request = accept(admin, call.request as Req | RefusedMessage, call.metadata);
        check(request, admin);
      } catch (error) {
        await admin.refused(error);
        return call.emit("error", toServiceError(error));
      }
      await admin.allowed();
      if (call.cancelled) return;
      try {
        await start(request);
      } catch (error) {
        if (call.cancelled) return;
        options.logger.info({ method, err: error }, "session stream failed");
        call.emit("error", toServiceError(error));
      }
    })();
  }

  return {
    submitJob: unary("SubmitJob", async (request, call) => {
      call.require("submit");
      if (!request.definition) throw new InvalidArgument("definition: is not set; send the job's JobDefinition");
      checkSubmittedSignature(request.definition, options.trust, call.caller);
      const jobId = await jobs.submit(request.definition, call.caller);
      call.made(jobId);
      return { jobId };
    }),

    uploadArtifact(call: ServerReadableStream<UploadArtifactRequest, UploadArtifactResponse>, callback: sendUnaryData<UploadArtifactResponse>) {
      const gone = new AbortController();
      call.once("cancelled", () => gone.abort(new UploadInterrupted("the caller went away mid-upload; the bytes received are kept for a resume")));
      void (async () => {
        const admin = new AdminCall(gate, "UploadArtifact", peerOf(call));
        let response: UploadArtifactResponse;
        try {
          admin.authenticate(call.metadata);
          admin.require("submit");
          const stored = await receiveArtifact(call as AsyncIterable<UploadArtifactRequest | RefusedMessage>, jobs.artifacts, admin, gone.signal);
          response = { artifact: { sha256: stored.sha256, sizeBytes: stored.size } };
        } catch (error) {
          await admin.refused(error);
          return callback(toServiceError(error));
        }
        await admin.allowed();
        callback(null, response);
      })();
    },

    getArtifactStatus: unary("GetArtifactStatus", async (request, call) => {
      call.require("submit");
      const problem = sha256Problem(request.sha256);
      if (problem) throw new InvalidArgument(`sha256: ${problem}`);
      call.concerns({ sha256: request.sha256 });
      const status = await jobs.artifacts.status(request.sha256, uploadOwner(call.caller));
      switch (status.state) {
        case "complete":
          return { state: ArtifactState.ARTIFACT_STATE_COMPLETE, receivedBytes: status.artifact.size, sizeBytes: status.artifact.size };
        case "partial":
          return { state: ArtifactState.ARTIFACT_STATE_PARTIAL, receivedBytes: status.received, sizeBytes: status.size };
        default:
          return { state: ArtifactState.ARTIFACT_STATE_ABSENT, receivedBytes: 0, sizeBytes: 0 };
      }
    }),

    cloneJob: unary("CloneJob", async (request, call) => {
      call.require("submit");
      call.require("view", jobIdOf(request));
      // A clone is a submission by the caller: a signature binds its signer, so only the signer may clone a signed job with its certificate.
      const definition = await jobs.definition(request.jobId);
      checkSubmittedSignature(definition, options.trust, call.caller);
      const jobId = await jobs.submit(definition, call.caller, request.jobId);
      call.made(jobId);
      return { jobId };
    }),

    getJobMeta: unary("GetJobMeta", (request, call) => ({ meta: call.require("view", jobIdOf(request)) })),

    getJobMetrics: unary("GetJobMetrics", (request, call) => readJobHistory(call.require("view", jobIdOf(request))!.resultLocation, request.client)),

    listJobs: unary("ListJobs", (request, call) => {
      call.require("view");
      const metas = jobs.list(
        { allSubmitters: request.allSubmitters, namePrefix: request.namePrefix, idPrefix: request.idPrefix, newest: request.newest, reverse: request.reverse },
        call.caller,
        (meta) => call.permits("view", meta),
      );
      return { jobs: request.detailed ? metas : metas.map(summary) };
    }),

    abortJob: unary("AbortJob", async (request, call) => {
      call.require("manage", jobIdOf(request));
      return { status: await jobs.abort(request.jobId, call.caller, request.reason) };
    }),

    deleteJob: unary("DeleteJob", async (request, call) => {
      call.require("manage", jobIdOf(request));
      await jobs.delete(request.jobId, call.caller);
      return {};
    }),

    getSystemInfo: unary("GetSystemInfo", (_request, call) => {
      call.require("view");
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

    downloadJobResult(call: ServerWritableStream<DownloadJobResultRequest, DownloadJobResultResponse>) {
      const cancelled = new AbortController();
      call.once("cancelled", () => cancelled.abort());
      streaming(
        "DownloadJobResult",
        call,
        (request, admin) => {
          const meta = admin.require("download", jobIdOf(request))!;
          if (!isFinished(meta.status)) {
            throw new JobNotDone(`job ${meta.jobId} is ${statusName(meta.status)}: its result can be downloaded once it has finished; wait with: campfire monitor ${meta.jobId}`);
          }
        },
        async ({ jobId }) => {
          const meta = jobs.meta(jobId);
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
          options.logger.info({ job: jobId, files, bytes }, "job result downloaded");
        },
      );
    },

    getJobLogs(call: ServerWritableStream<GetJobLogsRequest, GetJobLogsResponse>) {
      streaming(
        "GetJobLogs",
        call,
        (request, admin) => void admin.require("view", jobIdOf(request)),
        (request) => streamJobLogs(call, { jobs, hub }, request),
      );
    },

    monitorJob(call: ServerWritableStream<MonitorJobRequest, MonitorJobResponse>) {
      let timeoutMs = 0;
      streaming(
        "MonitorJob",
        call,
        (request, admin) => {
          admin.require("view", jobIdOf(request));
          timeoutMs = request.timeout ? request.timeout.seconds * 1000 + request.timeout.nanos / 1e6 : 0;
          if (!(timeoutMs >= 0)) throw new InvalidArgument(`timeout: ${JSON.stringify(request.timeout)} must not be negative`);
        },
        ({ jobId }) => monitorJob(call, { jobs, hub }, jobId, timeoutMs),
      );
    },
  };
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
