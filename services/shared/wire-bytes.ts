import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";

/** Told of every message's encoded size as it crosses the wire (for metrics). */
export interface WireBytesObserver {
  /** A message of `bytes` was read (a request on a server, a response on a client). */
  bytesIn(service: string, bytes: number): void;
  /** A message of `bytes` was written. */
  bytesOut(service: string, bytes: number): void;
  /** A message was decoded: the hook for what only the content tells (an upload's declared size). */
  decoded?(method: string, message: unknown): void;
}

/**
 * `definition` with every message's size reported to `observer`, on both the
 * serving side (requests in, responses out) and the calling side (requests
 * out, responses in). `service` labels the counts. Sizes are those of the
 * protobuf messages, without HTTP/2 and TLS framing.
 */
export function countingWireBytes<S extends ServiceDefinition>(definition: S, service: string, observer: WireBytesObserver): S {
  const wrapped: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(definition) as Array<[string, MethodDefinition<unknown, unknown>]>) {
    const decodedIn = (decode: (bytes: Buffer) => unknown) => (bytes: Buffer) => {
      observer.bytesIn(service, bytes.length);
      const message = decode(bytes);
      observer.decoded?.(method.path, message);
      return message;
    };
    const encodedOut = (encode: (message: unknown) => Buffer) => (message: unknown) => {
      const bytes = encode(message);
      observer.bytesOut(service, bytes.length);
      return bytes;
    };
    wrapped[name] = {
      ...method,
      requestDeserialize: decodedIn(method.requestDeserialize),
      responseDeserialize: decodedIn(method.responseDeserialize),
      requestSerialize: encodedOut(method.requestSerialize),
      responseSerialize: encodedOut(method.responseSerialize),
    };
  }
  return wrapped as S;
}
