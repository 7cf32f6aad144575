import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { mkdir, open, rename, rm } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { type CallOptions, type ClientReadableStream, Metadata, type ServiceError, status as Status, type StatusObject } from "@grpc/grpc-js";
import type { ArtifactRef, JobDefinition, JobMeta, RunStatus } from "../../gen/campfire/admin/v1/job.js";
import type {
  AbortJobRequest,
  AbortJobResponse,
  CloneJobRequest,
  CloneJobResponse,
  DeleteJobRequest,
  DeleteJobResponse,
  GetArtifactStatusRequest,
  GetArtifactStatusResponse,
  GetJobMetaRequest,
  GetJobMetaResponse,
  GetSystemInfoRequest,
  GetSystemInfoResponse,
  ListJobsRequest,
  ListJobsResponse,
  MonitorJobResponse,
  SubmitJobRequest,
  SubmitJobResponse,
  UploadArtifactResponse,
} from "../../gen/campfire/admin/v1/session_service.js";
import type { GetJobLogsResponse, GetJobMetricsRequest, GetJobMetricsResponse, RoundRecord, TrainerLogLine } from "../../gen/campfire/admin/v1/metrics.js";
import { ArtifactState, MonitorReturnCode, SessionServiceClient } from "../../gen/campfire/admin/v1/session_service.js";
import { backoffDelay, delay } from "../shared/wait.js";
import { type ClientTransportOptions, siteChannelCredentials } from "../security/client-transport.js";
import { signJobDefinition } from "../security/job-signing.js";
import { certifyKit, type TlsKit } from "../security/kit.js";
import { CHUNK_BYTES } from "../shared/payload.js";
import { relativePathProblem } from "../site/jobs/validation.js";
import { ARTIFACT_THRESHOLD_BYTES, type ArtifactSource, bytesSource, type UploadProgress } from "./artifacts.js";
import { ArtifactUploadError, InternalError, InvalidJobDefinition, NoConnection, SessionClosed, SessionError, sessionErrorOf } from "./errors.js";
import { readJobFolder } from "./job-folder.js";

export { MonitorReturnCode };

export const DEFAULT_SITE = "127.0.0.1:7443";

export interface SessionOptions extends ClientTransportOptions {
  /** The site's address, host:port. Default 127.0.0.1:7443. */
  site?: string;
  /** Sent as "authorization: Bearer <token>" (over TLS, or to a loopback site). A site without a token map ignores it. */
  token?: string;
  /** The deadline of each call that is not a stream. Default 30 s. */
  callTimeoutMs?: number;
  /** The deadline of a whole result download, and of each attempt of an artifact upload. Default 30 min. */
  downloadTimeoutMs?: number;
}

export interface SubmitOptions {
  /** Told how each artifact upload progresses (every 1 % or 1 MiB, whichever is more, and at its end). */
  onProgress?: (progress: UploadProgress) => void;
  /** App files at least this large are uploaded as artifacts ahead of the job. Default 1 MiB. */
  artifactThresholdBytes?: number;
}

export interface UploadOptions {
  onProgress?: (progress: UploadProgress) => void;
  /** Attempts before giving up when the connection keeps dropping; each resumes where the site's bytes end. Default 5. */
  maxAttempts?: number;
}

export interface ListJobsOptions {
  /** Every field of each job; otherwise a summary. */
  detailed?: boolean;
  /** The jobs of every submitter; otherwise only the caller's. */
  all?: boolean;
  namePrefix?: string;
  idPrefix?: string;
  /** Only the newest N. */
  newest?: number;
  /** Newest first. */
  reverse?: boolean;
}

export interface MonitorOptions {
  /** Stop watching after this long; 0 (the default) watches until the job finishes. */
  timeoutMs?: number;
  /**
   * Called with the job's meta on every change (first with its state now), and
   * what the site recorded since the previous call: finished rounds and the
   * clients' metric records. Returning false ends monitoring: ENDED_BY_CB.
   */
  onUpdate?: (meta: JobMeta, recorded: MonitorRecords) => boolean | void | Promise<boolean | void>;
  /** Ends monitoring early: the call rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Whether to reconnect when the site cannot be reached (it restarted, the
   * network dropped): with backoff from 100 ms to 5 s, resuming from the job's
   * state then, and the rounds recorded meanwhile. Default true; the timeout
   * still bounds the whole watch.
   */
  reconnect?: boolean;
  /** Told before each reconnection attempt: which one, how long it waits first, and why. */
  onReconnecting?: (attempt: number, delayMs: number, error: SessionError) => void;
}

/** What a monitor update carries beside the meta. */
export type MonitorRecords = Pick<MonitorJobResponse, "rounds" | "clientRecords" | "droppedClientRecords">;

export type SystemInfo = GetSystemInfoResponse;

/** How far one file of a result download has come. */
export interface DownloadProgress {
  path: string;
  attempt: number;
  totalBytes: number;
  bytes: number;
  resumedFrom: number;
  done: boolean;
}

/**
 * A session with a site's SessionService: the reference SessionSpec in
 * TypeScript. Every call has a deadline (monitorJob without a timeout has a
 * signal and close() instead); every failure is one of the typed errors in
 * errors.ts.
 */
export class Session {
  readonly site: string;
  private readonly client: SessionServiceClient;
  private readonly metadata = new Metadata();
  private readonly callTimeoutMs: number;
  private readonly downloadTimeoutMs: number;
  private readonly inFlight = new Set<{ cancel(): void }>();
  /** The kit whose key signs submitted jobs: `tls`, when it has a certificate and key. */
  private readonly signingKit: TlsKit | undefined;
  private closed = false;

  constructor(options: SessionOptions = {}) {
    this.site = options.site ?? DEFAULT_SITE;
    this.callTimeoutMs = options.callTimeoutMs ?? 30_000;
    this.downloadTimeoutMs = options.downloadTimeoutMs ?? 30 * 60_000;
    this.signingKit = options.tls?.cert && options.tls.key ? options.tls : undefined;
    if (options.token) this.metadata.set("authorization", `Bearer ${options.token}`);
    this.client = new SessionServiceClient(this.site, siteChannelCredentials(this.site, options), {
      "grpc.max_receive_message_length": 8 * 1024 * 1024,
      "grpc.max_send_message_length": -1,
    });
  }

  /**
   * Reads the job folder (see readJobFolder), uploads its large files as
   * artifacts (resuming across dropped connections), and submits it.
   * Returns the job's id.
   */
  async submitJob(folder: string, options: SubmitOptions = {}): Promise<string> {
    this.ensureOpen();
    const { definition, artifacts } = await readJobFolder(folder, options.artifactThresholdBytes);
    for (const source of artifacts) await this.uploadArtifact(source, options);
    return this.submitJobDefinition(definition, options);
  }

  /**
   * Submits a job already in structured form. Returns the job's id. With a
   * kit that has a certificate and key (`tls`), the definition is signed
   * with that key first (JobDefinition.signature), so that agents can check
   * that the job they run is the one this admin submitted; a definition that
   * already carries a signature is sent as it is (a signature covers a file
   * by its digest, so it holds whether the file travels inline or as an
   * artifact). Inline files of `artifactThresholdBytes` or more are uploaded
   * as artifacts first and referenced, so the job message stays small.
   */
  async submitJobDefinition(definition: JobDefinition, options: SubmitOptions = {}): Promise<string> {
    this.ensureOpen();
    const threshold = options.artifactThresholdBytes ?? ARTIFACT_THRESHOLD_BYTES;
    const apps = [];
    for (const app of definition.apps) {
      const files = [];
      for (const file of app.files) {
        if (file.artifact || file.content.length < threshold) files.push(file);
        else files.push({ path: file.path, content: new Uint8Array(0), artifact: await this.uploadArtifact(bytesSource(`${app.name}/${file.path}`, file.content), options) });
      }
      apps.push({ ...app, files });
    }
    const referenced = { ...definition, apps };
    const signed = this.signingKit && !referenced.signature ? { ...referenced, signature: this.sign(referenced, this.signingKit) } : referenced;
    return (await this.unary("submitJob", { definition: signed })).jobId;
  }

  /**
   * Makes sure the site holds the artifact: asks how much it has, then
   * uploads the rest in chunks; when the connection drops, asks again and
   * resumes from there (up to `maxAttempts`). Resolves with the reference a
   * job definition names it by.
   */
  async uploadArtifact(source: ArtifactSource, options: UploadOptions = {}): Promise<ArtifactRef> {
    const maxAttempts = options.maxAttempts ?? 5;
    const { sha256, sizeBytes } = source.ref;
    for (let attempt = 1; ; attempt++) {
      try {
        const status = await this.unary("getArtifactStatus", { sha256 });
        const progress = { path: source.path, sha256, totalBytes: sizeBytes, attempt };
        if (status.state === ArtifactState.ARTIFACT_STATE_COMPLETE && status.sizeBytes === sizeBytes) {
          options.onProgress?.({ ...progress, sentBytes: sizeBytes, resumedFrom: sizeBytes, done: true });
          return source.ref;
        }
        const offset = status.state === ArtifactState.ARTIFACT_STATE_PARTIAL && status.sizeBytes === sizeBytes ? status.receivedBytes : 0;
        await this.sendArtifact(source, offset, (sentBytes, done) => options.onProgress?.({ ...progress, sentBytes, resumedFrom: offset, done }));
        return source.ref;
      } catch (error) {
        const translated = this.translate(error, "uploadArtifact");
        const retryable = translated instanceof NoConnection || translated instanceof ArtifactUploadError || translated.name === "SessionClosed" && !this.closed;
        if (!retryable || attempt >= maxAttempts) throw translated;
        await sleep(Math.min(5_000, 200 * 2 ** (attempt - 1)));
      }
    }
  }

  /** One upload attempt from `offset`: the header, then the chunks, waiting for the stream to drain when it is full. */
  private async sendArtifact(source: ArtifactSource, offset: number, progress: (sentBytes: number, done: boolean) => void): Promise<void> {
    this.ensureOpen();
    let settled = false;
    let call!: ReturnType<SessionServiceClient["uploadArtifact"]>;
    const response = new Promise<UploadArtifactResponse>((resolve, reject) => {
      call = this.client.uploadArtifact(this.metadata, this.deadline(this.downloadTimeoutMs), (error, reply) => {
        settled = true;
        if (error) reject(error);
        else resolve(reply);
      });
    });
    // Read below when it matters; a failure after this attempt was given up must not go unhandled.
    response.catch(() => undefined);
    const tracked = { cancel: () => call.cancel() };
    this.inFlight.add(tracked);
    try {
      call.write({ body: { $case: "header", value: { ...source.ref, offset } } });
      let sent = offset;
      let reported = offset;
      const step = Math.max(CHUNK_BYTES, source.ref.sizeBytes / 100);
      for await (const chunk of source.chunks(offset)) {
        if (settled) break;
        if (!call.write({ body: { $case: "chunk", value: chunk } })) await Promise.race([once(call, "drain"), response]);
        sent += chunk.length;
        if (sent - reported >= step) {
          reported = sent;
          progress(sent, false);
        }
      }
      call.end();
      const { artifact } = await response;
      if (artifact?.sha256 !== source.ref.sha256) throw new InternalError(`the site stored artifact ${artifact?.sha256} for ${source.path}, expected ${source.ref.sha256}`);
      progress(source.ref.sizeBytes, true);
    } catch (error) {
      call.cancel();
      // The site's answer says why; a local read error or a drain cut short by it is secondary.
      throw settled ? await response.then(() => error, (reason: unknown) => reason) : error;
    } finally {
      this.inFlight.delete(tracked);
    }
  }

  private sign(definition: JobDefinition, kit: TlsKit) {
    try {
      return signJobDefinition(definition, certifyKit(kit));
    } catch (error) {
      throw new InvalidJobDefinition(`could not sign the job with the kit${kit.dir ? ` ${kit.dir}` : ""}: ${(error as Error).message}`, { cause: error });
    }
  }

  /** Submits a new job with the definition of `jobId`. Returns the new job's id. */
  async cloneJob(jobId: string): Promise<string> {
    return (await this.unary("cloneJob", { jobId })).jobId;
  }

  async getJobMeta(jobId: string): Promise<JobMeta> {
    const { meta } = await this.unary("getJobMeta", { jobId });
    if (!meta) throw new InternalError(`the site answered GetJobMeta for ${jobId} without a meta`);
    return meta;
  }

  /** A job's metric history (rounds and client records so far), optionally one client's only. */
  async getJobMetrics(jobId: string, options: { client?: string } = {}): Promise<GetJobMetricsResponse> {
    return this.unary("getJobMetrics", { jobId, client: options.client ?? "" });
  }

  /**
   * The lines a job's trainers logged, oldest first; with `follow`, then the
   * new ones as they come, until the job finishes (or `signal` fires).
   */
  async *jobLogs(jobId: string, options: { client?: string; follow?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<TrainerLogLine> {
    const call = this.stream(this.client.getJobLogs({ jobId, client: options.client ?? "", follow: options.follow ?? false }, this.metadata, options.follow ? {} : this.deadline(this.downloadTimeoutMs)));
    const onAbort = () => call.stream.cancel();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for await (const message of call.stream as AsyncIterable<GetJobLogsResponse>) yield* message.lines;
      await call.ended();
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason;
      throw this.translate(error, "getJobLogs");
    } finally {
      options.signal?.removeEventListener("abort", onAbort);
      call.done();
    }
  }

  /** Lists jobs by submit time, oldest first unless `reverse`. */
  async listJobs(options: ListJobsOptions = {}): Promise<JobMeta[]> {
    const request = {
      detailed: options.detailed ?? false,
      allSubmitters: options.all ?? false,
      namePrefix: options.namePrefix ?? "",
      idPrefix: options.idPrefix ?? "",
      newest: options.newest ?? 0,
      reverse: options.reverse ?? false,
    };
    return (await this.unary("listJobs", request)).jobs;
  }

  /** Aborts a job (no effect once it finished). Resolves with its status after the call. */
  async abortJob(jobId: string, reason = ""): Promise<RunStatus> {
    return (await this.unary("abortJob", { jobId, reason })).status;
  }

  /** Deletes a job that is not running, with its workspace. */
  async deleteJob(jobId: string): Promise<void> {
    await this.unary("deleteJob", { jobId });
  }

  async getSystemInfo(): Promise<SystemInfo> {
    return this.unary("getSystemInfo", {});
  }

  /**
   * Downloads a finished job's result into <dir>/<jobId>/ (replacing what was
   * there) and returns that folder. Files land in a temporary sibling first,
   * so a failed download leaves nothing half-written behind.
   */
  async downloadJobResult(jobId: string, dir = ".", options: { onProgress?: (progress: DownloadProgress) => void } = {}): Promise<string> {
    const target = resolve(dir, jobId);
    const staging = `${target}.partial-${randomBytes(4).toString("hex")}`;
    const call = this.stream(this.client.downloadJobResult({ jobId }, this.metadata, this.deadline(this.downloadTimeoutMs)));
    let file: { path: string; size: number; written: number; handle: Awaited<ReturnType<typeof open>> } | undefined;
    const closeFile = async () => {
      if (!file) return;
      const { path, size, written, handle } = file;
      file = undefined;
      await handle.close();
      if (written !== size) throw new InternalError(`${path}: received ${written} of its ${size} bytes`);
    };
    try {
      await mkdir(staging, { recursive: true });
      for await (const chunk of call.stream) {
        let current = file;
        if (!current || current.path !== chunk.path) {
          await closeFile();
          const problem = relativePathProblem(chunk.path);
          if (problem) throw new InternalError(`the site sent a file whose path ${JSON.stringify(chunk.path)} ${problem}`);
          const local = join(staging, ...chunk.path.split("/"));
          await mkdir(dirname(local), { recursive: true });
          current = file = { path: chunk.path, size: chunk.fileSize, written: 0, handle: await open(local, "wx") };
        }
        if (chunk.offset !== current.written) throw new InternalError(`${chunk.path}: a chunk at offset ${chunk.offset}, expected ${current.written}`);
        await current.handle.write(chunk.chunk);
        current.written += chunk.chunk.length;
        options.onProgress?.({ path: chunk.path, attempt: 1, totalBytes: current.size, bytes: current.written, resumedFrom: 0, done: current.written >= current.size });
      }
      await call.ended();
      await closeFile();
      await rm(target, { recursive: true, force: true });
      await rename(staging, target);
      return target;
    } catch (error) {
      await file?.handle.close().catch(() => undefined);
      await rm(staging, { recursive: true, force: true });
      throw this.translate(error, "downloadJobResult");
    } finally {
      call.done();
    }
  }

  /**
   * Watches a job until it finishes (JOB_FINISHED), `timeoutMs` passes
   * (TIMEOUT), or `onUpdate` returns false (ENDED_BY_CB). Reconnects when the
   * site goes away, unless told not to (see MonitorOptions.reconnect).
   */
  async monitorJob(jobId: string, options: MonitorOptions = {}): Promise<MonitorReturnCode> {
    const timeoutMs = options.timeoutMs ?? 0;
    const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : Infinity;
    /** The last round the caller was given, so a reconnection hands over only the rounds it missed. */
    let lastRound: number | undefined;
    /** Failed attempts since the site last answered: the backoff starts over after each success. */
    let failures = 0;
    const forward = async (meta: JobMeta, recorded: MonitorRecords) => {
      failures = 0;
      const last = recorded.rounds.at(-1);
      if (last) lastRound = last.round;
      return options.onUpdate?.(meta, recorded);
    };
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.monitorOnce(jobId, deadline, options.signal, forward, attempt > 0 ? () => this.roundsSince(jobId, lastRound) : undefined);
      } catch (error) {
        if (!(error instanceof NoConnection) || options.reconnect === false) throw error;
        const delayMs = Math.min(backoffDelay(failures++, 100, 5_000), deadline - Date.now());
        if (delayMs <= 0) return MonitorReturnCode.MONITOR_RETURN_CODE_TIMEOUT;
        options.onReconnecting?.(failures, delayMs, error);
        await delay(delayMs, options.signal).catch((reason: unknown) => {
          throw options.signal?.aborted ? options.signal.reason : reason;
        });
      }
    }
  }

  /** The rounds recorded after `round` (all of them when undefined): what a watcher missed while it was away. */
  private async roundsSince(jobId: string, round: number | undefined): Promise<RoundRecord[]> {
    const { rounds } = await this.getJobMetrics(jobId);
    return rounds.filter((record) => round === undefined || record.round > round);
  }

  /** One MonitorJob stream; `missed` adds the rounds recorded before it to its first update. */
  private async monitorOnce(
    jobId: string,
    deadline: number,
    signal: AbortSignal | undefined,
    onUpdate: (meta: JobMeta, recorded: MonitorRecords) => Promise<boolean | void>,
    missed: (() => Promise<RoundRecord[]>) | undefined,
  ): Promise<MonitorReturnCode> {
    const remainingMs = deadline - Date.now();
    if (remainingMs <= 0) return MonitorReturnCode.MONITOR_RETURN_CODE_TIMEOUT;
    const timeout = Number.isFinite(remainingMs) ? { seconds: Math.floor(remainingMs / 1000), nanos: Math.round(remainingMs % 1000) * 1_000_000 } : undefined;
    const callOptions = timeout ? this.deadline(remainingMs + this.callTimeoutMs) : {};
    const call = this.stream(this.client.monitorJob({ jobId, timeout }, this.metadata, callOptions));
    const onAbort = () => call.stream.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      signal?.throwIfAborted();
      let earlier = missed && (await missed());
      for await (const message of call.stream as AsyncIterable<MonitorJobResponse>) {
        const rounds = earlier ? [...earlier.filter((record) => !message.rounds.some((sent) => sent.round === record.round)), ...message.rounds] : message.rounds;
        earlier = undefined;
        const keepGoing = message.meta ? await onUpdate(message.meta, { ...message, rounds }) : undefined;
        if (message.returnCode !== MonitorReturnCode.MONITOR_RETURN_CODE_UNSPECIFIED) return message.returnCode;
        if (keepGoing === false) return MonitorReturnCode.MONITOR_RETURN_CODE_ENDED_BY_CB;
      }
      await call.ended();
      throw new InternalError(`the site ended monitoring of job ${jobId} without saying why`);
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      throw this.translate(error, "monitorJob");
    } finally {
      signal?.removeEventListener("abort", onAbort);
      call.done();
    }
  }

  /** Cancels the calls in flight (they fail with SessionClosed) and closes the connection. Later calls fail with SessionClosed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const call of this.inFlight) call.cancel();
    this.client.close();
  }

  private unary<M extends UnaryMethod>(method: M, request: UnaryCalls[M][0]): Promise<ResponseOf<M>> {
    this.ensureOpen();
    return new Promise<ResponseOf<M>>((resolve, reject) => {
      const invoke = this.client[method] as unknown as (
        request: unknown,
        metadata: Metadata,
        options: Partial<CallOptions>,
        callback: (error: ServiceError | null, response: ResponseOf<M>) => void,
      ) => { cancel(): void };
      const call = invoke.call(this.client, request, this.metadata, this.deadline(this.callTimeoutMs), (error, response) => {
        this.inFlight.delete(call);
        if (error) reject(this.translate(error, method));
        else resolve(response);
      });
      this.inFlight.add(call);
    });
  }

  /**
   * Tracks a stream so that close() can cancel it. `ended()` resolves once the
   * site sent an OK status and rejects with its error otherwise: reading a
   * stream to its end does not tell whether it ended in an error. done()
   * forgets the stream (and cancels it when still open).
   */
  private stream<T>(stream: ClientReadableStream<T>): { stream: ClientReadableStream<T>; ended(): Promise<void>; done(): void } {
    this.ensureOpen();
    let failure: ServiceError | undefined;
    // Errors are read from here; the listener also keeps a late one (after cancel) from being unhandled.
    stream.on("error", (error: ServiceError) => (failure ??= error));
    const status = new Promise<StatusObject>((resolve) => stream.once("status", resolve));
    this.inFlight.add(stream);
    return {
      stream,
      ended: async () => {
        const { code, details, metadata } = await status;
        if (code === Status.OK) return;
        throw failure ?? Object.assign(new Error(`${code} ${Status[code]}: ${details}`), { code, details, metadata });
      },
      done: () => {
        this.inFlight.delete(stream);
        stream.cancel();
      },
    };
  }

  private deadline(ms: number): Partial<CallOptions> {
    return { deadline: new Date(Date.now() + ms) };
  }

  private ensureOpen(): void {
    if (this.closed) throw new SessionClosed("the session is closed; open a new one");
  }

  private translate(error: unknown, method: string): Error {
    if (this.closed) return new SessionClosed(`the session was closed during ${method}`, { cause: error });
    if (error instanceof SessionError) return error;
    if (isServiceError(error)) return sessionErrorOf(error, method, this.site);
    return error as Error;
  }
}

/** The calls that are not streams: request and response types. */
interface UnaryCalls {
  submitJob: [SubmitJobRequest, SubmitJobResponse];
  getArtifactStatus: [GetArtifactStatusRequest, GetArtifactStatusResponse];
  cloneJob: [CloneJobRequest, CloneJobResponse];
  getJobMeta: [GetJobMetaRequest, GetJobMetaResponse];
  getJobMetrics: [GetJobMetricsRequest, GetJobMetricsResponse];
  listJobs: [ListJobsRequest, ListJobsResponse];
  abortJob: [AbortJobRequest, AbortJobResponse];
  deleteJob: [DeleteJobRequest, DeleteJobResponse];
  getSystemInfo: [GetSystemInfoRequest, GetSystemInfoResponse];
}
type UnaryMethod = keyof UnaryCalls;
type ResponseOf<M extends UnaryMethod> = UnaryCalls[M][1];

function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === "number" && "details" in error;
}
