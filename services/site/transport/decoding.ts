import type { ServiceDefinition } from "@grpc/grpc-js";

/**
 * A request that could not be decoded. grpc-js would answer undecodable bytes
 * with INTERNAL, which blames the server; the handlers turn this marker into
 * INVALID_ARGUMENT instead.
 */
export class UndecodableMessage {
  constructor(
    readonly typeName: string,
    readonly reason: string,
  ) {}

  describe(): string {
    return `${this.typeName} could not be decoded: ${this.reason}`;
  }
}

/** Wraps every method's request decoder so that a decoding failure reaches the handler as an UndecodableMessage. */
export function withTolerantDecoding<S extends ServiceDefinition>(service: S): S {
  const wrapped: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(service)) {
    const typeName = method.path.split("/").pop() + " request";
    wrapped[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return method.requestDeserialize(bytes);
        } catch (error) {
          return new UndecodableMessage(typeName, (error as Error).message);
        }
      },
    };
  }
  return wrapped as S;
}
