import { isIP } from "node:net";

/**
 * True when `address` (host:port, [v6]:port, or a unix: socket) can only be
 * reached from this machine: 127.0.0.0/8, ::1, localhost, unix sockets.
 * Anything else, 0.0.0.0 and :: included, is reachable from the network.
 */
export function isLoopbackAddress(address: string): boolean {
  if (address.startsWith("unix:")) return true;
  const host = address.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1").toLowerCase();
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  if (isIP(host) === 6) return host === "::1";
  return false;
}
