import type { Http2Server } from "node:http2";
import type { Server } from "@grpc/grpc-js";
import { CHUNK_BYTES } from "../../shared/payload.js";

/**
 * How much an agent may send on one stream before the site reads it: one chunk.
 * An upload held back by the memory budget parks at most this much at the site.
 */
export const STREAM_RECEIVE_WINDOW_BYTES = CHUNK_BYTES;
/** How much an agent may send on its connection, all streams together, before the site reads it. */
export const CONNECTION_RECEIVE_WINDOW_BYTES = 16 * CHUNK_BYTES;

/** The fields of grpc-js's Server this relies on (1.14: private, but stable since 1.10). */
interface GrpcServerInternals {
  http2Servers?: Map<Http2Server, unknown>;
}

/**
 * Widens the HTTP/2 receive windows of the site's listeners. Node's default,
 * 64 KiB per stream and per connection, made each 1 MiB upload chunk wait for
 * several window updates, each a turn of both event loops: an upload moved at
 * about half the speed the two processes could go (a 256 MiB result took
 * ~1.7 s to upload, ~0.9 s with these windows). grpc-js has no server option for
 * it (the client's grpc-node.flow_control_window has no server counterpart), so
 * this reaches the http2 servers it made: call it once bindAsync has returned.
 * Throws when grpc-js no longer keeps them where this looks, so that an upgrade
 * fails loudly (test/site-memory.test.ts checks the windows) rather than slowly.
 */
export function widenReceiveWindows(server: Server): void {
  const http2Servers = (server as unknown as GrpcServerInternals).http2Servers;
  if (!(http2Servers instanceof Map) || http2Servers.size === 0) throw new Error("grpc-js keeps its http2 servers elsewhere: widenReceiveWindows needs updating");
  for (const http2Server of http2Servers.keys()) {
    http2Server.updateSettings({ initialWindowSize: STREAM_RECEIVE_WINDOW_BYTES });
    http2Server.on("session", (session) => session.setLocalWindowSize(CONNECTION_RECEIVE_WINDOW_BYTES));
  }
}
