import { type ClientDuplexStream, credentials, type ServiceError, status as Status } from "@grpc/grpc-js";
import { channelCredentials, type TlsKit } from "../../services/security/kit.js";
import { nextWakeUp } from "./wake-up.js";
import { AgentServiceClient, type ConnectRequest, type ConnectResponse, type Hello } from "../../gen/campfire/agent/v1/agent_service.js";

type ResponseKind = NonNullable<ConnectResponse["kind"]>;
type ValueOf<K extends ResponseKind["$case"]> = Extract<ResponseKind, { $case: K }>["value"];

export interface StreamEnd {
  code: Status;
  details: string;
}

/**
 * A hand-driven Connect stream: the test speaks the protocol message by message,
 * to produce duplicates, stale results and protocol violations that the agent
 * library never would.
 */
export class RawAgentStream {
  private readonly received: ConnectResponse[] = [];
  private readonly listeners = new Set<() => void>();
  readonly ended: Promise<StreamEnd>;

  private constructor(
    readonly client: AgentServiceClient,
    private readonly call: ClientDuplexStream<ConnectRequest, ConnectResponse>,
  ) {
    call.on("data", (message: ConnectResponse) => {
      this.received.push(message);
      this.listeners.forEach((listener) => listener());
    });
    this.ended = new Promise((resolve) => {
      call.on("error", (error: ServiceError) => resolve({ code: error.code, details: error.details }));
      call.on("status", (status) => resolve({ code: status.code, details: status.details }));
    });
  }

  /** Opens a Connect stream, plain text or, with a kit, over TLS (presenting the kit's certificate when it has one). */
  static open(port: number, tls?: TlsKit): RawAgentStream {
    const client = new AgentServiceClient(`127.0.0.1:${port}`, tls ? channelCredentials(tls) : credentials.createInsecure());
    return new RawAgentStream(client, client.connect());
  }

  /** Opens a stream and completes the hello / welcome exchange. */
  static async connect(port: number, hello: Partial<Hello> & { clientName: string; agentId: string }, tls?: TlsKit): Promise<RawAgentStream> {
    const stream = RawAgentStream.open(port, tls);
    stream.send({ kind: { $case: "hello", value: { protocolVersion: 1, resources: {}, taskNames: [], heldResult: undefined, ...hello } } });
    await stream.next("welcome");
    return stream;
  }

  send(message: ConnectRequest): void {
    this.call.write(message);
  }

  /** The next message of kind `kind`, skipping heartbeats and other kinds. */
  async next<K extends ResponseKind["$case"]>(kind: K, timeoutMs = 5_000): Promise<ValueOf<K>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.received.findIndex((message) => message.kind?.$case === kind);
      if (index >= 0) return this.received.splice(index, 1)[0]!.kind!.value as ValueOf<K>;
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`no ${kind} message within ${timeoutMs} ms`);
      await nextWakeUp(this.listeners, remaining);
    }
  }

  /** Waits for the stream to end; the kinds of the messages not taken by next(), in order, heartbeats left out. */
  async kindsUntilEnd(): Promise<string[]> {
    await this.ended;
    return this.received.map((message) => message.kind?.$case ?? "none").filter((kind) => kind !== "heartbeat");
  }

  close(): void {
    this.call.cancel();
    this.client.close();
  }
}
