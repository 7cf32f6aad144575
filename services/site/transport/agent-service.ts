import type { Readable } from "node:stream";
import type { sendUnaryData, ServerDuplexStream, ServerReadableStream, ServerWritableStream } from "@grpc/grpc-js";
import type {
  AgentServiceServer,
  ConnectRequest,
  ConnectResponse,
  DownloadPayloadRequest,
  DownloadPayloadResponse,
  UploadPayloadRequest,
  UploadPayloadResponse,
} from "../../../gen/campfire/agent/v1/agent_service.js";
import type { AuditEntry, AuditLog } from "../../security/audit.js";
import { PermissionDenied } from "../../security/errors.js";
import { claimedIdentity, type Identity } from "../../security/identity.js";
import type { SiteTrust } from "../../security/site-trust.js";
import type { Logger } from "../../shared/logger.js";
import { encodingChunks } from "../../shared/payload.js";
import { countChunkGarbage } from "../../shared/memory.js";
import { map, writeWindowed } from "../../shared/stream-writes.js";
import type { AgentHub } from "../agent-hub.js";
import type { AgentSession, ControlChannel } from "../agent-session.js";
import type { UploadSpool } from "../uploads/upload-spool.js";
import { AgentGone, HelloTimeout, MalformedMessage, MessageTooLarge, OutOfOrderMessage, PayloadTooLarge, type SiteError } from "../errors.js";
import { RefusedMessage } from "./decoding.js";
import { toServiceError } from "./grpc-status.js";
import { peerOf } from "./peer.js";

/** A Connect stream as the exchange sees it. */
class StreamChannel implements ControlChannel {
  congested = false;
  private open = true;

  constructor(private readonly call: ServerDuplexStream<ConnectRequest, ConnectResponse>) {
    call.on("drain", () => (this.congested = false));
  }

  send(message: ConnectResponse): void {
    if (!this.open || this.call.cancelled) return;
    if (!this.call.write(message)) this.congested = true;
  }

  close(error?: SiteError): void {
    if (!this.open) return;
    this.open = false;
    if (this.call.cancelled) return;
    if (error) this.call.emit("error", toServiceError(error));
    else this.call.end();
  }

  /** The peer went away: nothing more can be sent. */
  lost(): void {
    this.open = false;
  }
}

/** Limits against agents that hold resources without doing their part. */
export interface AgentLimits {
  /** A Connect stream that has not said hello within this is closed (DEADLINE_EXCEEDED). */
  helloTimeoutMs: number;
  /** Agents of one client connected at once (RESOURCE_EXHAUSTED past it). */
  maxAgentsPerClient: number;
}

export const DEFAULT_AGENT_LIMITS: AgentLimits = { helloTimeoutMs: 10_000, maxAgentsPerClient: 64 };

export interface AgentServiceOptions {
  hub: AgentHub;
  logger: Logger;
  audit: AuditLog;
  /** With TLS: who callers are. Every call must then carry a client certificate of the project. */
  trust: SiteTrust | undefined;
  /** The largest payload an agent may upload. */
  maxPayloadBytes: number;
  limits: AgentLimits;
}

/**
 * The gRPC handlers of campfire.agent.v1.AgentService: identity, decoding,
 * framing and status codes. With TLS every call is tied to the client its
 * certificate names: hello must claim that client, uploads must be for its
 * agents, downloads only of its tasks' data.
 */
export function agentServiceHandlers({ hub, logger, audit, trust, maxPayloadBytes, limits }: AgentServiceOptions): AgentServiceServer {
  // A failed write is the site's trouble, not the caller's: logged, and the call goes on.
  const record = (entry: AuditEntry) => void audit.record(entry).catch((error: unknown) => logger.error({ err: error, action: entry.action }, "could not write the audit log"));
  /** The caller's identity when the site has TLS (undefined without); refusals are audited and thrown. */
  const identify = (call: Parameters<typeof peerOf>[0], action: string): Identity | undefined => {
    if (!trust) return undefined;
    const peer = peerOf(call);
    try {
      const identity = trust.identify(peer);
      if (identity.kind !== "client") {
        throw new PermissionDenied(`${action}: the certificate of ${identity.name} is a${identity.kind === "admin" ? "n admin's" : " site's"}; only a client's certificate may act as an agent`);
      }
      return identity;
    } catch (error) {
      record({ identity: undefined, action, outcome: "denied", reason: (error as Error).message, peer: peer.address });
      throw error;
    }
  };
  const denied = (identity: Identity | undefined, action: string, error: unknown, peer: string, agentId?: string) =>
    record({ identity, action, outcome: "denied", reason: (error as Error).message, peer, agentId: agentId || undefined });
  // Refusals are answered once their audit lines are written, as admin calls are.
  const afterAudit = (reply: () => void) => void audit.flushed().then(reply);
  /** Open Connect streams by identity, so that a certificate revoked by a reload loses the streams it already holds. */
  const streams = new Map<(error: unknown) => void, Identity>();
  trust?.onReload(() => {
    for (const [fail, identity] of streams) {
      try {
        trust.checkNotRevoked(identity);
      } catch (error) {
        denied(identity, "agent.stream", error, "");
        fail(error);
      }
    }
  });

  return {
    connect(call: ServerDuplexStream<ConnectRequest, ConnectResponse>) {
      const channel = new StreamChannel(call);
      const peer = call.getPeer();
      let session: AgentSession | undefined;
      let identity: Identity | undefined;
      let helloTimer: NodeJS.Timeout | undefined;
      const fail = (error: unknown) => {
        clearTimeout(helloTimer);
        streams.delete(fail);
        (session?.logger ?? logger).warn({ err: error, peer, client: identity?.name }, "agent stream refused");
        afterAudit(() => channel.close(error as SiteError));
        if (session) hub.detach(session, channel);
      };
      try {
        identity = identify(call, "agent.join");
      } catch (error) {
        return fail(error);
      }
      if (identity) streams.set(fail, identity);
      helloTimer = setTimeout(() => {
        const error = new HelloTimeout(`no hello within ${limits.helloTimeoutMs} ms of opening the stream: the first message on Connect must be hello`);
        denied(identity, "agent.join", error, peer);
        fail(error);
      }, limits.helloTimeoutMs);
      call.on("data", (message: ConnectRequest | RefusedMessage) => {
        try {
          if (message instanceof RefusedMessage) throw refusal(message);
          if (session) return session.receive(message);
          if (message.kind?.$case !== "hello") {
            throw new OutOfOrderMessage(`the first message on Connect must be hello, got ${message.kind?.$case ?? "a message with no kind set"}`);
          }
          clearTimeout(helloTimer);
          const hello = message.kind.value;
          try {
            session = hub.accept(channel, hello, identity && { identity, resources: trust?.client(identity.name)?.resources ?? {} });
          } catch (error) {
            denied(identity, "agent.join", error, peer, hello.agentId);
            throw error;
          }
          record({ identity: identity ?? claimedIdentity(hello.clientName, "client"), action: "agent.join", outcome: "allowed", peer, agentId: hello.agentId });
        } catch (error) {
          fail(error);
        }
      });
      let left = false;
      const lost = () => {
        clearTimeout(helloTimer);
        streams.delete(fail);
        channel.lost();
        if (!session) return;
        hub.detach(session, channel);
        if (left) return;
        left = true;
        record({ identity: identity ?? claimedIdentity(session.clientName, "client"), action: "agent.leave", outcome: "allowed", peer, agentId: session.agentId });
      };
      call.on("end", () => {
        channel.close();
        lost();
      });
      call.on("cancelled", lost);
      call.on("error", lost);
    },

    uploadPayload(call: ServerReadableStream<UploadPayloadRequest, UploadPayloadResponse>, callback: sendUnaryData<UploadPayloadResponse>) {
      let identity: Identity | undefined;
      try {
        identity = identify(call, "agent.upload");
      } catch (error) {
        return afterAudit(() => callback(toServiceError(error)));
      }
      let spool: UploadSpool | undefined;
      let reserved = 0;
      let agentId = "";
      let done = false;
      const cancelled = new AbortController();
      const fail = (error: SiteError | Error) => {
        if (done) return;
        done = true;
        spool?.abandon();
        hub.payloads.releaseUpload(reserved);
        reserved = 0;
        logger.warn({ err: error, agent: agentId }, "upload refused");
        afterAudit(() => callback(toServiceError(error)));
      };
      call.once("cancelled", () => {
        cancelled.abort(new Error("the agent cancelled the upload"));
        fail(new AgentGone("the upload was cancelled"));
      });
      call.on("data", (message: UploadPayloadRequest | RefusedMessage) => {
        if (done) return;
        if (message instanceof RefusedMessage) return fail(refusal(message));
        const part = message.part;
        if (!spool) {
          if (reserved) return fail(new OutOfOrderMessage("after the header, an UploadPayloadRequest must carry chunk"));
          if (part?.$case !== "header") return fail(new OutOfOrderMessage("the first UploadPayloadRequest must carry header"));
          agentId = part.value.agentId;
          const agent = hub.agents().find((candidate) => candidate.agentId === agentId && candidate.connected);
          if (!agent) return fail(new OutOfOrderMessage(`header.agent_id ${JSON.stringify(agentId)} has no open Connect stream: say hello first`));
          if (identity && agent.clientName !== identity.name) {
            const error = new PermissionDenied(`header.agent_id ${JSON.stringify(agentId)} is an agent of client ${agent.clientName}; the certificate of ${identity.name} may upload only for its own agents`);
            denied(identity, "agent.upload", error, call.getPeer(), agentId);
            return fail(error);
          }
          const size = part.value.sizeBytes;
          if (size > maxPayloadBytes) return fail(new PayloadTooLarge(`header.size_bytes ${size} exceeds the site's limit of ${maxPayloadBytes} bytes`));
          // Read no chunk until the upload fits the budget: flow control holds the agent back meanwhile.
          const readAgain = holdReads(call);
          call.pause();
          hub.payloads.reserveUpload(size, cancelled.signal).then(
            () => {
              reserved = size;
              if (done) return hub.payloads.releaseUpload(size);
              // Each chunk goes to the upload's staging file as it arrives (scanned on the way): nothing is assembled in memory.
              spool = hub.payloads.spool(size);
              readAgain();
              call.resume();
            },
            () => undefined,
          );
          return;
        }
        if (part?.$case !== "chunk") return fail(new OutOfOrderMessage("after the header, an UploadPayloadRequest must carry chunk"));
        hub.touch(agentId);
        countChunkGarbage(part.value.length);
        const written = spool.write(part.value);
        if (written && "problem" in written) return fail(new MalformedMessage(`UploadPayloadRequest.chunk: ${written.problem}`));
        if (written) {
          // The disk is behind: stop reading until it catches up.
          call.pause();
          void written.then(() => call.resume());
        }
      });
      call.on("end", () => {
        if (done) return;
        if (!spool) return fail(new MalformedMessage("the upload ended before its header"));
        const staging = spool;
        staging.finish().then(
          (finished) => {
            if ("problem" in finished) return fail(new MalformedMessage(`UploadPayloadRequest: ${finished.problem}`));
            const { staged } = finished;
            if (done) return staged.release();
            done = true;
            callback(null, { payloadId: hub.payloads.putUpload(agentId, staged) });
          },
          // The site's own trouble (a full disk): INTERNAL, and the agent tries again.
          (error: Error) => fail(new Error(`could not stage the upload: ${error.message}`, { cause: error })),
        );
      });
    },

    async downloadPayload(call: ServerWritableStream<DownloadPayloadRequest, DownloadPayloadResponse>) {
      const request = call.request as DownloadPayloadRequest | RefusedMessage;
      let identity: Identity | undefined;
      try {
        identity = identify(call, "agent.download");
        if (request instanceof RefusedMessage) throw refusal(request);
        let encoded;
        try {
          encoded = hub.payloads.get(request.payloadId, identity?.name);
        } catch (error) {
          if (error instanceof PermissionDenied) denied(identity, "agent.download", error, call.getPeer());
          throw error;
        }
        const cancelled = new AbortController();
        call.once("cancelled", () => cancelled.abort());
        await writeWindowed(call, map(encodingChunks(encoded), (chunk) => {
          countChunkGarbage(chunk.length);
          return { chunk };
        }), cancelled.signal);
        call.end();
      } catch (error) {
        if (call.cancelled) return;
        logger.warn({ err: error }, "download refused");
        await audit.flushed();
        call.emit("error", toServiceError(error));
      }
    },
  };
}

/**
 * Stops grpc-js reading messages of `call` until the returned function is
 * called. Pausing alone does not: a paused stream still asks for messages
 * (_read) until 16 are buffered, and grpc-js reads one per ask, so each upload
 * waiting for the budget held 16 MiB of chunks that no budget counted (in a
 * round of 8 x 64 MiB, 7 waiting: 112 MiB of the site's peak RSS). An
 * ask left unanswered keeps the stream's one read pending: it asks no more,
 * grpc-js takes nothing more from HTTP/2, and flow control holds the agent back.
 */
function holdReads(call: Readable): () => void {
  const read = call._read;
  let asked = false;
  call._read = () => {
    asked = true;
  };
  return () => {
    call._read = read;
    if (asked) call._read(call.readableHighWaterMark);
  };
}

/** The site error for a message the decoder refused. */
export function refusal(message: RefusedMessage): SiteError {
  return message.reason === "oversized" ? new MessageTooLarge(message.description) : new MalformedMessage(message.description);
}
