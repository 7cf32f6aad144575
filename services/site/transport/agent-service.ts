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
import type { Logger } from "../../shared/logger.js";
import { ChunkAssembler, chunksOfPieces } from "../../shared/payload.js";
import { map, writeWindowed } from "../../shared/stream-writes.js";
import type { AgentHub } from "../agent-hub.js";
import type { AgentSession, ControlChannel } from "../agent-session.js";
import { AgentGone, MalformedMessage, MessageTooLarge, OutOfOrderMessage, PayloadTooLarge, type SiteError } from "../errors.js";
import { RefusedMessage } from "./decoding.js";
import { toServiceError } from "./grpc-status.js";

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

export interface AgentServiceOptions {
  hub: AgentHub;
  logger: Logger;
  /** The largest payload an agent may upload. */
  maxPayloadBytes: number;
}

/** The gRPC handlers of campfire.agent.v1.AgentService: decoding, framing and status codes only. */
export function agentServiceHandlers({ hub, logger, maxPayloadBytes }: AgentServiceOptions): AgentServiceServer {
  return {
    connect(call: ServerDuplexStream<ConnectRequest, ConnectResponse>) {
      const channel = new StreamChannel(call);
      let session: AgentSession | undefined;
      const fail = (error: unknown) => {
        (session?.logger ?? logger).warn({ err: error, peer: call.getPeer() }, "agent stream refused");
        channel.close(error as SiteError);
        if (session) hub.detach(session, channel);
      };
      call.on("data", (message: ConnectRequest | RefusedMessage) => {
        try {
          if (message instanceof RefusedMessage) throw refusal(message);
          if (session) return session.receive(message);
          if (message.kind?.$case !== "hello") {
            throw new OutOfOrderMessage(`the first message on Connect must be hello, got ${message.kind?.$case ?? "a message with no kind set"}`);
          }
          session = hub.accept(channel, message.kind.value);
        } catch (error) {
          fail(error);
        }
      });
      const lost = () => {
        channel.lost();
        if (session) hub.detach(session, channel);
      };
      call.on("end", () => {
        channel.close();
        lost();
      });
      call.on("cancelled", lost);
      call.on("error", lost);
    },

    uploadPayload(call: ServerReadableStream<UploadPayloadRequest, UploadPayloadResponse>, callback: sendUnaryData<UploadPayloadResponse>) {
      let assembler: ChunkAssembler | undefined;
      let reserved = 0;
      let agentId = "";
      let done = false;
      const cancelled = new AbortController();
      const fail = (error: SiteError) => {
        if (done) return;
        done = true;
        hub.payloads.releaseUpload(reserved);
        reserved = 0;
        logger.warn({ err: error, agent: agentId }, "upload refused");
        callback(toServiceError(error));
      };
      call.once("cancelled", () => {
        cancelled.abort(new Error("the agent cancelled the upload"));
        fail(new AgentGone("the upload was cancelled"));
      });
      call.on("data", (message: UploadPayloadRequest | RefusedMessage) => {
        if (done) return;
        if (message instanceof RefusedMessage) return fail(refusal(message));
        const part = message.part;
        if (!assembler) {
          if (part?.$case !== "header") return fail(new OutOfOrderMessage("the first UploadPayloadRequest must carry header"));
          agentId = part.value.agentId;
          if (!hub.agents().some((agent) => agent.agentId === agentId && agent.connected)) {
            return fail(new OutOfOrderMessage(`header.agent_id ${JSON.stringify(agentId)} has no open Connect stream: say hello first`));
          }
          const size = part.value.sizeBytes;
          if (size > maxPayloadBytes) return fail(new PayloadTooLarge(`header.size_bytes ${size} exceeds the site's limit of ${maxPayloadBytes} bytes`));
          // Read no chunk until the upload fits the memory budget: flow control holds the agent back meanwhile.
          const readAgain = holdReads(call);
          call.pause();
          hub.payloads.reserveUpload(size, cancelled.signal).then(
            () => {
              reserved = size;
              if (done) return hub.payloads.releaseUpload(size);
              assembler = new ChunkAssembler(size);
              readAgain();
              call.resume();
            },
            () => undefined,
          );
          return;
        }
        if (part?.$case !== "chunk") return fail(new OutOfOrderMessage("after the header, an UploadPayloadRequest must carry chunk"));
        hub.touch(agentId);
        const problem = assembler.add(part.value);
        if (problem) fail(new MalformedMessage(`UploadPayloadRequest.chunk: ${problem}`));
      });
      call.on("end", () => {
        if (done) return;
        if (!assembler) return fail(new MalformedMessage("the upload ended before its header"));
        const assembled = assembler.finish();
        if ("problem" in assembled) return fail(new MalformedMessage(`UploadPayloadRequest: ${assembled.problem}`));
        done = true;
        callback(null, { payloadId: hub.payloads.putUpload(agentId, assembled.bytes) });
      });
    },

    async downloadPayload(call: ServerWritableStream<DownloadPayloadRequest, DownloadPayloadResponse>) {
      const request = call.request as DownloadPayloadRequest | RefusedMessage;
      try {
        if (request instanceof RefusedMessage) throw refusal(request);
        const encoded = hub.payloads.get(request.payloadId);
        const cancelled = new AbortController();
        call.once("cancelled", () => cancelled.abort());
        await writeWindowed(call, map(chunksOfPieces(encoded), (chunk) => ({ chunk })), cancelled.signal);
        call.end();
      } catch (error) {
        if (call.cancelled) return;
        logger.warn({ err: error }, "download refused");
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
