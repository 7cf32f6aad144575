import { X509Certificate } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { type ChannelCredentials, credentials } from "@grpc/grpc-js";
import { identityOfCertificate } from "./certificates.js";
import type { Identity } from "./identity.js";

/**
 * What a participant needs for TLS: the project's CA and, except for a tool
 * that authenticates with a token, its own certificate and key.
 */
export interface TlsKit {
  /** The project CA, PEM. */
  ca: Buffer;
  cert?: Buffer;
  key?: Buffer;
  /** Where the kit was read from, when it came from a folder. */
  dir?: string;
}

/** A kit with a certificate: who it says its holder is, checked against its own CA. */
export interface CertifiedKit extends TlsKit {
  cert: Buffer;
  key: Buffer;
  identity: Identity;
  certificate: X509Certificate;
}

/**
 * Reads a kit folder as `campfire provision` writes it: ca.crt and one
 * <name>.crt with its <name>.key (the folder's own name first, when there are
 * several). A folder with only ca.crt is a kit for token-only tools.
 */
export async function loadKit(dir: string): Promise<TlsKit> {
  const entries = await readdir(dir).catch((error: NodeJS.ErrnoException) => {
    throw new Error(`TLS kit ${dir}: ${error.code === "ENOENT" ? "no such folder" : error.message} (provision one with: campfire provision <project.yaml> --out <dir>)`, { cause: error });
  });
  if (!entries.includes("ca.crt")) throw new Error(`TLS kit ${dir}: ca.crt is missing; a kit holds ca.crt, <name>.crt and <name>.key`);
  const certificates = entries.filter((entry) => entry.endsWith(".crt") && entry !== "ca.crt");
  const own = certificates.find((entry) => entry === `${basename(dir)}.crt`) ?? (certificates.length === 1 ? certificates[0] : undefined);
  if (!own && certificates.length > 1) throw new Error(`TLS kit ${dir}: several certificates (${certificates.join(", ")}) and none named after the folder`);
  const ca = await readFile(join(dir, "ca.crt"));
  if (!own) return { ca, dir };
  const keyFile = own.replace(/\.crt$/, ".key");
  if (!entries.includes(keyFile)) throw new Error(`TLS kit ${dir}: ${own} has no ${keyFile} beside it`);
  const [cert, key] = await Promise.all([readFile(join(dir, own)), readFile(join(dir, keyFile))]);
  return { ca, cert, key, dir };
}

/**
 * Checks that the kit's certificate is signed by its CA and valid now, and
 * reads the identity it carries. Errors say what is wrong and what to do: a
 * participant should learn of an expired certificate from its own process,
 * not from a refused handshake.
 */
export function certifyKit(kit: TlsKit, now = new Date()): CertifiedKit {
  const where = kit.dir ? `TLS kit ${kit.dir}` : "TLS kit";
  if (!kit.cert || !kit.key) throw new Error(`${where}: has no certificate and key of its own (only ca.crt)`);
  const ca = new X509Certificate(kit.ca);
  const certificate = new X509Certificate(kit.cert);
  if (!certificate.verify(ca.publicKey)) throw new Error(`${where}: the certificate (${certificate.subject.replaceAll("\n", ", ")}) is not signed by its ca.crt (${ca.subject.replaceAll("\n", ", ")})`);
  if (now < new Date(certificate.validFrom)) throw new Error(`${where}: the certificate is not valid before ${certificate.validFrom}; check this machine's clock`);
  if (now > new Date(certificate.validTo)) throw new Error(`${where}: the certificate expired on ${certificate.validTo}; ask the project admin for a renewed kit (campfire provision --renew)`);
  return { ...kit, cert: kit.cert, key: kit.key, certificate, identity: identityOfCertificate(certificate) };
}

/**
 * Credentials for a channel to the site: trust only the project CA, present
 * the kit's certificate when it has one. The site's certificate must name the
 * host dialled (its kit's hosts); `serverName` checks another name instead,
 * for a site reached through a tunnel or a proxy.
 */
export function channelCredentials(kit: TlsKit, serverName?: string): ChannelCredentials {
  const verify = serverName ? { checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerIdentity(serverName, cert) } : {};
  return credentials.createSsl(kit.ca, kit.key ?? null, kit.cert ?? null, verify);
}
