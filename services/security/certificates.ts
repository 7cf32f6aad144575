import "reflect-metadata"; // @peculiar/x509's dependency injection needs it before it loads
import { createPrivateKey, randomBytes, webcrypto, X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import * as x509 from "@peculiar/x509";
import { type CertificateRole, type Identity, isAdminRole, kindOfRole } from "./identity.js";

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** Every key is ECDSA P-256 with SHA-256: small, fast to handshake, and spoken by every TLS stack our clients use. */
const KEY_ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

/** A certificate and its private key, both PEM. */
export interface CertifiedKey {
  certPem: string;
  keyPem: string;
}

export interface ParticipantSubject {
  name: string;
  org: string;
  role: CertificateRole;
  /** The site only: host names and IP addresses agents and admins reach it by. */
  hosts?: readonly string[];
}

export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

/** `days` from now, starting a minute ago so that a clock a little behind still accepts a fresh certificate. */
export function validFor(days: number, now = new Date()): Validity {
  return { notBefore: new Date(now.getTime() - 60_000), notAfter: new Date(now.getTime() + days * 86_400_000) };
}

/** The project's root of trust: a self-signed CA that may sign participants, not other CAs. */
export async function createCertificateAuthority(project: string, validity: Validity): Promise<CertifiedKey> {
  const keys = await generateKeys();
  const name = `CN=${project} CA, O=${project}`;
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: name,
    issuer: name,
    ...validity,
    signingAlgorithm: KEY_ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: keys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: certificate.toString("pem"), keyPem: await privateKeyPem(keys.privateKey) };
}

/**
 * Issues a participant's certificate: subject CN=name, O=org, OU=role; a URI
 * SAN urn:campfire:<project>:<role>:<name> that says the same; the site's host
 * names and addresses as DNS and IP SANs; an admin name that is an e-mail
 * address as an e-mail SAN. Sites may serve and connect; everyone else may
 * only connect as a TLS client.
 */
export async function issueCertificate(ca: CertifiedKey, project: string, subject: ParticipantSubject, validity: Validity): Promise<CertifiedKey & { serial: string }> {
  const caCertificate = new x509.X509Certificate(ca.certPem);
  const caKey = await webcrypto.subtle.importKey("pkcs8", createPrivateKey(ca.keyPem).export({ type: "pkcs8", format: "der" }), KEY_ALGORITHM, false, ["sign"]);
  const keys = await generateKeys();
  const serialNumber = randomSerial();
  const names: x509.JsonGeneralName[] = [{ type: "url", value: participantUri(project, subject.role, subject.name) }];
  for (const host of subject.hosts ?? []) names.push({ type: isIP(host) ? "ip" : "dns", value: host });
  if (subject.name.includes("@")) names.push({ type: "email", value: subject.name });
  const usages = subject.role === "site" ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth] : [x509.ExtendedKeyUsage.clientAuth];
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber,
    subject: `CN=${subject.name}, O=${subject.org}, OU=${subject.role}`,
    issuer: caCertificate.subject,
    ...validity,
    signingAlgorithm: KEY_ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension(usages),
      new x509.SubjectAlternativeNameExtension(names),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCertificate),
    ],
  });
  return { certPem: certificate.toString("pem"), keyPem: await privateKeyPem(keys.privateKey), serial: serialNumber };
}

/** urn:campfire:demo:client:hospital-a */
export function participantUri(project: string, role: CertificateRole, name: string): string {
  return `urn:campfire:${project}:${role}:${name}`;
}

/**
 * The identity a certificate of this project's CA carries. Call it only on a
 * certificate that chains to the CA (the TLS handshake checked that): it reads
 * what the CA wrote, and refuses a certificate whose subject and URI SAN
 * disagree or name no known role.
 */
export function identityOfCertificate(certificate: X509Certificate): Identity {
  const subject = subjectFields(certificate.subject);
  const [name, org, role] = [subject.get("CN"), subject.get("O"), subject.get("OU")];
  if (!name || !org || !role) throw new Error(`certificate ${certificate.serialNumber} has no CN, O and OU in its subject (${certificate.subject.replaceAll("\n", ", ")}): it was not issued by campfire provision`);
  if (role !== "site" && role !== "client" && !isAdminRole(role)) throw new Error(`certificate ${certificate.serialNumber} names the role ${JSON.stringify(role)}, which campfire does not know`);
  const uri = /URI:urn:campfire:([^:,\s]+):([^:,\s]+):([^,\s]+)/.exec(certificate.subjectAltName ?? "");
  if (!uri || uri[2] !== role || uri[3] !== name) throw new Error(`certificate ${certificate.serialNumber}: its subject alternative name does not say ${participantUri("<project>", role, name)}`);
  return { name, org, kind: kindOfRole(role), role: isAdminRole(role) ? role : undefined, project: uri[1]!, via: "certificate", serial: certificate.serialNumber.toLowerCase() };
}

/** "CN=a\nO=b" -> {CN: a, O: b}. The names provisioning allows hold no newline, comma or '='. */
function subjectFields(subject: string): Map<string, string> {
  return new Map(subject.split("\n").map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)] as [string, string]));
}

async function generateKeys(): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
}

async function privateKeyPem(key: webcrypto.CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY");
}

/** 16 random bytes, the top bit clear so the serial is a positive integer as RFC 5280 asks. */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return bytes.toString("hex");
}
