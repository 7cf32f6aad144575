import { type ClientDuplexStream, Metadata, type ServiceError, status as Status } from "@grpc/grpc-js";
import {
  type AgentServiceClient,
  type Bye,
  type ConnectRequest,
  type ConnectResponse,
  type Hello,
  type PayloadRef,
  type Welcome,
} from "../../gen/campfire/agent/v1/agent_service.js";
import { siteChannelCredentials } from "../security/client-transport.js";
import { AgentWireClient, countingAgentClient, encodedUploadChunk, uploadChunkScratchBytes } from "../shared/agent-wire.js";
import type { Logger } from "../shared/logger.js";
import { allocateModelBuffer } from "./model-buffers.js";
import { CHUNK_BYTES, ChunkAssembler, encodingChunks, MAX_MESSAGE_BYTES, type StreamedEncoding } from "../shared/payload.js";
import { collectGarbageBefore, countChunkGarbage } from "../shared/memory.js";
import { CHUNKS_IN_FLIGHT, map, writeWindowed } from "../shared/stream-writes.js";
import { backoffDelay, delay } from "../shared/wait.js";
import { AgentClosed } from "./errors.js";
import type { ResolvedAgentOptions } from "./options.js";

/** What the connection reports to the agent. */
export interface ConnectionEvents {
  hello(): Hello;
  welcomed(welcome: Welcome): void;
  message(message: ConnectResponse): void;
  /** No sign of life from the site within the heartbeat timeout (reported once per outage). */
  peerGone(): void;
  /** The site refused the agent for good, or said it was replaced: the agent must close. */
  fatal(error: AgentClosed): void;
}

/** How many bytes of a download the site may send ahead of what this agent has read. */
const PAYLOAD_FLOW_CONTROL_WINDOW = 8 * CHUNK_BYTES;

/** The channel's longest reconnect backoff (see the channel options). */
const CHANNEL_MAX_BACKOFF_MS = 500;

/** How long stop() waits for the site to close the stream before cutting it. */
const STOP_GRACE_MS = 1_000;

/** Status codes that mean "this agent is wrong", where reconnecting would only repeat the refusal. */
const PERMANENT_REFUSALS = new Set([
  Status.INVALID_ARGUMENT,
  Status.FAILED_PRECONDITION,
  Status.ALREADY_EXISTS,
  Status.RESOURCE_EXHAUSTED,
  Status.UNIMPLEMENTED,
  Status.UNAUTHENTICATED,
  Status.PERMISSION_DENIED,
]);

/**
 * The agent's gRPC edge: keeps one Connect stream open to the site, reconnecting
 * with capped exponential backoff and full jitter; sends heartbeats when quiet;
 * detects a silent site; moves large payloads on their own streams.
 */
export class SiteConnection {
  private client!: AgentServiceClient;
  /** Payloads travel on a connection of their own, so a heartbeat never queues behind a model's bytes. */
  private payloadClient!: AgentServiceClient;
  /** Makes both clients, on new connections. */
  private readonly openClients: () => void;
  private readonly stopping = new AbortController();
  private call: ClientDuplexStream<ConnectRequest, ConnectResponse> | undefined;
  private welcomed = false;
  private welcomes = 0;
  private congested = false;
  private lastSeenAt = Date.now();
  private lastSentAt = 0;
  private peerGoneReported = false;
  private heartbeatSequence = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly tickMs: number;
  private lastTickAt = Date.now();
  private loop: Promise<void> | undefined;
  private stopped: Promise<void> | undefined;
  private readonly logger: Logger;

  constructor(
    private readonly options: ResolvedAgentOptions,
    private readonly events: ConnectionEvents,
  ) {
    this.logger = options.logger;
    const channelOptions = {
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      // grpc-js retries a lost connection on a backoff of its own (from 1 s, x1.6, up to 120 s), under
      // ours: a stream opened during it fails at once, so agents came back seconds after the site did,
      // and minutes after a long outage. The channel starts from the agent's delay and stays short, so
      // that the agent's own backoff decides: a channel backoff as long as the agent's added ~0.8 s to a rejoin.
      "grpc.initial_reconnect_backoff_ms": options.reconnectBaseDelayMs,
      "grpc.max_reconnect_backoff_ms": Math.min(options.reconnectMaxDelayMs, CHANNEL_MAX_BACKOFF_MS),
      // Each agent owns its connections, as an agent in a process of its own does: grpc-js would otherwise
      // share one HTTP/2 connection among all agents of a process for the same site, and with it flow
      // control windows, a failure, and a read loop that turns all their streams into one lockstep batch.
      "grpc.use_local_subchannel_pool": 1,
    };
    const channelCredentials = siteChannelCredentials(options.siteAddress, options);
    const observer = options.observer;
    const Client = observer?.bytesIn && observer.bytesOut ? countingAgentClient({ bytesIn: (service, bytes) => observer.bytesIn?.(service, bytes), bytesOut: (service, bytes) => observer.bytesOut?.(service, bytes) }) : AgentWireClient;
    this.openClients = () => {
      this.client = new Client(options.siteAddress, channelCredentials, channelOptions);
      this.payloadClient = new Client(options.siteAddress, channelCredentials, {
        ...channelOptions,
        // HTTP/2's default 64 KiB window stalled a download every 64 KiB until this process's event loop
        // granted more; 8 chunks' worth keeps a model streaming (model transfer 0.61x -> 0.85x raw grpc-js).
        "grpc-node.flow_control_window": PAYLOAD_FLOW_CONTROL_WINDOW,
      });
    };
    this.openClients();
    const tickMs = (this.tickMs = Math.max(10, Math.min(1000, options.heartbeatIntervalMs / 2, options.heartbeatTimeoutMs > 0 ? options.heartbeatTimeoutMs / 4 : Infinity)));
    this.timer = setInterval(() => this.tick(), tickMs);
    this.timer.unref();
  }

  start(): void {
    this.loop ??= this.run();
  }

  get connected(): boolean {
    return this.welcomed;
  }

  /** Counts welcomes: what the site held for the previous stream (uploads) may be gone after a new one. */
  get generation(): number {
    return this.welcomes;
  }

  /** Sends a control message when the stream is up. Returns false when it could not be sent now. */
  send(message: ConnectRequest): boolean {
    if (!this.call || !this.welcomed) return false;
    this.lastSentAt = Date.now();
    if (!this.call.write(message)) this.congested = true;
    return true;
  }

  /** True when optional messages (metrics, heartbeats) should be dropped rather than queued. */
  get congestedOrDown(): boolean {
    return !this.welcomed || this.congested;
  }

  /**
   * Uploads a payload in chunks, a few in flight at a time (pieces in files
   * are read only as their chunks go). No deadline on the whole: a large model
   * on a slow link takes as long as it takes. It fails when no chunk could be
   * sent for `idleTimeoutMs` (a dead link, or a site that keeps it waiting for
   * its upload budget that long: the caller tries again), or when `signal` fires.
   */
  async upload(encoding: StreamedEncoding, idleTimeoutMs: number, signal?: AbortSignal): Promise<PayloadRef> {
    const stalled = new AbortController();
    // The caller's abort (a newer upload replaces this one, or the result is no longer wanted) cancels it like a stall.
    signal?.addEventListener("abort", () => stalled.abort(signal.reason), { once: true });
    let idle: NodeJS.Timeout | undefined;
    const progress = () => {
      clearTimeout(idle);
      idle = setTimeout(() => stalled.abort(new Error(`the upload made no progress for ${idleTimeoutMs} ms`)), idleTimeoutMs);
    };
    const response = new Promise<string>((resolve, reject) => {
      /** Why this side cancelled (no progress, a result file that cannot be read): that, not CANCELLED, is the failure. */
      let failure: unknown;
      // waitForReady: right after a reconnect the payload channel may still be in its connection backoff.
      const call = this.payloadClient.uploadPayload(waitForReady(), (error, reply) => (error ? reject(failure ?? error) : resolve(reply.payloadId)));
      const cancel = () => {
        failure ??= stalled.signal.reason;
        call.cancel();
      };
      stalled.signal.addEventListener("abort", cancel, { once: true });
      progress();
      void (async () => {
        try {
          call.write({ part: { $case: "header", value: { agentId: this.options.agentId, sizeBytes: encoding.size } } });
          // Each chunk is encoded into one of a few buffers used in turn, not a new 1 MiB buffer (garbage
          // at once, as grpc-js copies it): writeWindowed keeps at most CHUNKS_IN_FLIGHT messages unwritten
          // and takes the next one from here before waiting, so one buffer more than that is never in use.
          const scratch = Array.from({ length: Math.min(CHUNKS_IN_FLIGHT + 1, Math.ceil(encoding.size / CHUNK_BYTES)) }, () =>
            Buffer.allocUnsafe(uploadChunkScratchBytes(Math.min(CHUNK_BYTES, encoding.size))),
          );
          let sent = 0;
          const chunks = map(encodingChunks(encoding), (chunk) => {
            progress();
            countChunkGarbage(chunk.length);
            return encodedUploadChunk(chunk, scratch[sent++ % scratch.length]!);
          });
          await writeWindowed(call, chunks, stalled.signal, CHUNKS_IN_FLIGHT);
          call.end();
        } catch (error) {
          failure ??= error;
          call.cancel();
        } finally {
          stalled.signal.removeEventListener("abort", cancel);
        }
      })();
    });
    try {
      return { payloadId: await response, sizeBytes: encoding.size };
    } finally {
      clearTimeout(idle);
    }
  }

  /** Downloads a payload that a task references, into `into` (a buffer of exactly its size) when given. */
  async download(ref: PayloadRef, signal: AbortSignal, into?: Buffer): Promise<Buffer> {
    collectGarbageBefore(ref.sizeBytes);
    const assembler = new ChunkAssembler(ref.sizeBytes, into ?? allocateModelBuffer(ref.sizeBytes));
    const call = this.payloadClient.downloadPayload({ payloadId: ref.payloadId }, waitForReady());
    const cancel = () => call.cancel();
    signal.addEventListener("abort", cancel, { once: true });
    try {
      for await (const message of call) {
        this.lastSeenAt = Date.now();
        const { chunk } = message as { chunk: Buffer };
        countChunkGarbage(chunk.length);
        const problem = assembler.add(chunk);
        if (problem) throw new Error(`payload ${ref.payloadId}: ${problem}`);
      }
    } finally {
      signal.removeEventListener("abort", cancel);
    }
    const assembled = assembler.finish();
    if ("problem" in assembled) throw new Error(`payload ${ref.payloadId}: ${assembled.problem}`);
    return assembled.bytes;
  }

  /** Says bye (when given), closes the stream and stops reconnecting. Idempotent: the first call's bye wins. */
  stop(bye?: Bye): Promise<void> {
    this.stopped ??= (async () => {
      if (bye && this.call && this.welcomed) this.call.write({ kind: { $case: "bye", value: bye } });
      this.stopping.abort(new AgentClosed("the agent was stopped"));
      clearInterval(this.timer);
      const call = this.call;
      call?.end();
      // A dead link never finishes the stream: give the site a moment to close it, then cut it.
      const cut = setTimeout(() => call?.cancel(), STOP_GRACE_MS);
      await this.loop;
      clearTimeout(cut);
      this.client.close();
      this.payloadClient.close();
    })();
    return this.stopped;
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.stopping.signal.aborted) {
      const outcome = await this.session();
      if (outcome === "welcomed") attempt = 0;
      if (outcome === "fatal" || this.stopping.signal.aborted) return;
      const wait = backoffDelay(attempt++, this.options.reconnectBaseDelayMs, this.options.reconnectMaxDelayMs);
      this.logger.debug({ attempt, waitMs: Math.round(wait) }, "reconnecting");
      try {
        await delay(wait, this.stopping.signal);
      } catch {
        return;
      }
    }
  }

  /** One stream, from hello to its end. */
  private session(): Promise<"welcomed" | "refused" | "fatal"> {
    return new Promise((resolve) => {
      const call = this.client.connect();
      this.call = call;
      this.congested = false;
      let welcomed = false;
      call.on("data", (message: ConnectResponse) => {
        this.lastSeenAt = Date.now();
        if (message.kind?.$case === "welcome") {
          welcomed = this.welcomed = true;
          if (this.welcomes++ > 0) this.options.observer?.reconnected?.();
          this.peerGoneReported = false;
          this.logger.info({ site: message.kind.value.siteName }, "connected to site");
          this.events.welcomed(message.kind.value);
          return;
        }
        if (message.kind?.$case === "bye") {
          const bye = message.kind.value;
          this.logger.info({ reason: bye.reason, message: bye.message }, "site said bye");
        }
        this.events.message(message);
      });
      call.on("drain", () => (this.congested = false));
      let settled = false;
      const settle = (error?: ServiceError) => {
        if (settled) return;
        settled = true;
        this.welcomed = false;
        if (this.call === call) this.call = undefined;
        if (error && PERMANENT_REFUSALS.has(error.code) && !this.stopping.signal.aborted) {
          this.logger.error({ code: Status[error.code], details: error.details }, "the site refused this agent");
          this.events.fatal(new AgentClosed(`the site refused this agent: ${Status[error.code]}: ${error.details}`, { cause: error }));
          return resolve("fatal");
        }
        if (!this.stopping.signal.aborted) this.logger.warn({ code: error ? Status[error.code] : "OK", details: error?.details }, "stream to site ended");
        resolve(welcomed ? "welcomed" : "refused");
      };
      call.on("error", (error: ServiceError) => settle(error));
      call.on("end", () => settle());
      call.on("status", () => settle());
      this.lastSentAt = Date.now();
      call.write({ kind: { $case: "hello", value: this.events.hello() } });
    });
  }

  private tick(): void {
    const now = Date.now();
    // A late tick means this process stalled; read what queued up before judging the site (see AgentHub.sweep).
    const onTime = now - this.lastTickAt < 2 * this.tickMs + 50;
    this.lastTickAt = now;
    const { heartbeatIntervalMs, heartbeatTimeoutMs } = this.options;
    if (this.welcomed && !this.congested && now - this.lastSentAt >= heartbeatIntervalMs) {
      this.send({ kind: { $case: "heartbeat", value: { sequence: ++this.heartbeatSequence, sentAt: new Date(now) } } });
    }
    if (onTime && heartbeatTimeoutMs > 0 && now - this.lastSeenAt > heartbeatTimeoutMs && !this.peerGoneReported) {
      this.peerGoneReported = true;
      this.logger.warn({ silentMs: now - this.lastSeenAt }, "site is silent past the heartbeat timeout: reconnecting");
      this.call?.cancel();
      // The connection itself is suspect (a frozen site, or a load balancer holding a route to one open):
      // the next stream goes on a new connection, which may reach another replica.
      this.client.close();
      this.payloadClient.close();
      this.openClients();
      this.events.peerGone();
    }
  }
}

/** Call metadata that makes a call wait for its channel to connect instead of failing fast during a reconnect backoff. */
function waitForReady(): Metadata {
  return new Metadata({ waitForReady: true });
}
