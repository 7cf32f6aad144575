import { ServerCredentials } from "@grpc/grpc-js";
import type { SecureContextOptions } from "node:tls";
import type { CertifiedKit } from "./kit.js";

/** A TLS handshake not finished within this is dropped: a connection that only holds a socket open gets nothing. */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * The site's TLS: its kit's certificate, and client certificates requested
 * and verified against the project CA but not required by the handshake.
 * Each call then checks the verdict (transport/peer.ts), so that a refused
 * agent gets UNAUTHENTICATED with a reason instead of a torn handshake, a
 * tool may authenticate with a token alone, and health checks need no
 * certificate. `reload` swaps in a renewed certificate without a restart.
 */
export class SiteServerCredentials extends ServerCredentials {
  constructor(kit: CertifiedKit) {
    super({ requestCert: true, rejectUnauthorized: false, handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS, minVersion: "TLSv1.2" }, contextOf(kit));
  }

  reload(kit: CertifiedKit): void {
    this.updateSecureContextOptions(contextOf(kit));
  }

  override _equals(other: ServerCredentials): boolean {
    return other === this;
  }
}

function contextOf(kit: CertifiedKit): SecureContextOptions {
  return { ca: kit.ca, cert: kit.cert, key: kit.key };
}
