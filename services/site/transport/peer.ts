import { X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import type { Peer } from "../../security/site-trust.js";
import type { ServerSurfaceCall } from "@grpc/grpc-js/build/src/server-call.js";

type AuthContext = ReturnType<ServerSurfaceCall["getAuthContext"]>;

/** The peer of a server call. */
export function peerOf(call: Pick<ServerSurfaceCall, "getPeer" | "getAuthContext">): Peer {
  const address = call.getPeer();
  const context: AuthContext = call.getAuthContext();
  if (context.sslPeerCertificate?.raw) return { address, tls: true, certificate: new X509Certificate(context.sslPeerCertificate.raw) };
  const socket = tlsSocketOf(call);
  if (!socket) return context.transportSecurityType ? { address, tls: true, certificateProblem: "no client certificate" } : { address, tls: false };
  const sent = Object.keys(socket.getPeerCertificate() ?? {}).length > 0;
  const verdict = socket.authorizationError ? verdictInWords(socket.authorizationError) : undefined;
  return { address, tls: true, certificateProblem: sent ? (verdict ?? "not verified") : "no client certificate" };
}

/**
 * The TLS socket under a call, for the one thing grpc-js's auth context leaves
 * out: why a certificate was not verified (it reports only verified ones). The
 * path runs through grpc-js internals (call -> intercepting calls -> HTTP/2
 * stream -> session -> socket); test/security-tls.test.ts pins it, and if a
 * grpc-js upgrade moves it, callers still get a clear, less specific, refusal.
 */
function tlsSocketOf(call: unknown): TLSSocket | undefined {
  let node = (call as { call?: unknown }).call;
  for (let depth = 0; node && depth < 8; depth++) {
    const socket = (node as { stream?: { session?: { socket?: unknown } } }).stream?.session?.socket;
    if (socket && typeof (socket as TLSSocket).getPeerCertificate === "function") return socket as TLSSocket;
    node = (node as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

/** OpenSSL's verdicts on client certificates, as Node reports them (a code), in words a participant can act on. */
const VERDICTS: Readonly<Record<string, string>> = {
  CERT_HAS_EXPIRED: "certificate has expired",
  CERT_NOT_YET_VALID: "certificate is not yet valid",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "unable to verify the certificate: it was not issued by this project's CA",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "unable to get local issuer certificate: it was not issued by this project's CA",
  DEPTH_ZERO_SELF_SIGNED_CERT: "self-signed certificate: it was not issued by this project's CA",
  SELF_SIGNED_CERT_IN_CHAIN: "self-signed certificate in the chain: it was not issued by this project's CA",
  CERT_SIGNATURE_FAILURE: "the certificate's signature does not verify",
  CERT_REVOKED: "certificate revoked",
};

function verdictInWords(error: string | Error): string {
  const code = typeof error === "string" ? error : ((error as NodeJS.ErrnoException).code ?? error.message);
  const words = VERDICTS[code];
  return words ? `${words}; ${code}` : code;
}
