import type { ServiceDefinition } from "@grpc/grpc-js";

/**
 * A request the site will not read: undecodable bytes, or a message over the
 * service's size limit. grpc-js would answer undecodable bytes with INTERNAL,
 * which blames the server, and applies one size limit to every service; the
 * handlers turn this marker into INVALID_ARGUMENT or RESOURCE_EXHAUSTED instead.
 */
export class RefusedMessage {
  constructor(
    readonly reason: "undecodable" | "oversized",
    readonly description: string,
  ) {}
}

/**
 * Wraps every method's request decoder: a decoding failure, or a message larger
 * than `maxMessageBytes`, reaches the handler as a RefusedMessage.
 */
export function withTolerantDecoding<S extends ServiceDefinition>(service: S, maxMessageBytes = Infinity): S {
  const wrapped: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(service)) {
    const typeName = `${method.path.split("/").pop()} request`;
    wrapped[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        if (bytes.length > maxMessageBytes) {
          return new RefusedMessage("oversized", `${typeName} of ${bytes.length} bytes is larger than max (${maxMessageBytes}); send large data in chunks`);
        }
        try {
          return method.requestDeserialize(bytes);
        } catch (error) {
          return new RefusedMessage("undecodable", `${typeName} could not be decoded: ${(error as Error).message}`);
        }
      },
    };
  }
  return wrapped as S;
}
