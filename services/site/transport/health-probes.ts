import { Server, ServerCredentials } from "@grpc/grpc-js";
import type { HealthImplementation } from "grpc-health-check";

/**
 * A second, plain-text listener serving grpc.health.v1 and nothing else, from
 * the site's own health table (so it turns NOT_SERVING with the site). For
 * Kubernetes' grpc probes, which can speak neither TLS nor present a
 * certificate. It carries no job data and takes no identity: it only says
 * SERVING or NOT_SERVING per service name, which is why it may listen beyond
 * loopback without TLS.
 */
export async function listenForHealthProbes(health: HealthImplementation, address: string): Promise<{ server: Server; port: number }> {
  const server = new Server({ "grpc.max_receive_message_length": 4 * 1024 });
  health.addToServer(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, ServerCredentials.createInsecure(), (error, boundPort) => (error ? reject(error) : resolve(boundPort))),
  ).catch((error: unknown) => {
    throw new Error(`cannot listen for health probes on ${address}: ${(error as Error).message}`, { cause: error });
  });
  return { server, port };
}
