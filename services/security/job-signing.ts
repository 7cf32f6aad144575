import { createHash, createPrivateKey, randomBytes, sign, verify, X509Certificate } from "node:crypto";
import { z } from "zod";
import type { JobDefinition } from "../../gen/campfire/admin/v1/job.js";
import type { JobSignature } from "../../gen/campfire/common/v1/job_signature.js";
import { identityOfCertificate } from "./certificates.js";
import { describeIdentity, type Identity } from "./identity.js";
import type { CertifiedKit } from "./kit.js";

/**
 * Signed jobs: the manifest an admin signs (campfire.common.v1.JobSignature
 * documents it for other languages), signing, and the checks the site (at
 * SubmitJob) and agents (before a job's first task) make. Nothing here
 * trusts the site: what is verified is the manifest's bytes, the signer's
 * certificate against a CA the verifier holds itself, and the manifest's
 * content against what the verifier was given.
 */

export const JOB_MANIFEST_FORMAT = "campfire.job-manifest.v1";

/** A signed_at this far ahead of the verifier's clock is still taken (clocks drift). */
export const SIGNING_CLOCK_SKEW_MS = 5 * 60_000;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

/** What a manifest says of the job: everything a JobDefinition holds but job_folder_name and the signature. */
export interface ManifestContent {
  name: string;
  deploy_map: Record<string, string[]>;
  min_clients: number;
  mandatory_clients: string[];
  resource_spec: Record<string, Record<string, number>>;
  apps: Record<string, ManifestApp>;
}

export interface ManifestApp {
  server_config: JsonObject | null;
  client_config: JsonObject | null;
  /** Path -> lower-case hex SHA-256 of the file's content (inline, or the uploaded artifact's). */
  files: Record<string, string>;
}

export interface JobManifest extends ManifestContent {
  format: typeof JOB_MANIFEST_FORMAT;
  project: string;
  signer: string;
  signed_at: string;
  nonce: string;
}

/** The content fields, in the order mismatches are reported. */
const CONTENT_FIELDS = ["name", "deploy_map", "min_clients", "mandatory_clients", "resource_spec", "apps"] as const;

const jsonObject = z.record(z.string(), z.json());
const manifestSchema = z
  .object({
    format: z.literal(JOB_MANIFEST_FORMAT, { message: `must be "${JOB_MANIFEST_FORMAT}"` }),
    project: z.string().min(1),
    name: z.string(),
    deploy_map: z.record(z.string(), z.array(z.string())),
    min_clients: z.number().int().nonnegative(),
    mandatory_clients: z.array(z.string()),
    resource_spec: z.record(z.string(), z.record(z.string(), z.number())),
    apps: z.record(
      z.string(),
      z
        .object({
          server_config: jsonObject.nullable(),
          client_config: jsonObject.nullable(),
          files: z.record(z.string(), z.string().regex(/^[0-9a-f]{64}$/, "must be a lower-case hex SHA-256")),
        })
        .strict(),
    ),
    signer: z.string().min(1),
    signed_at: z.iso.datetime({ offset: true, message: "must be an RFC 3339 time" }),
    nonce: z.string().regex(/^[0-9a-f]{32,}$/, "must be 16 or more random bytes as lower-case hex"),
  })
  .strict();

/**
 * A signature could not be accepted. `untrusted`: it verifies as far as it
 * goes, but its signer is not one the verifier trusts (another CA, not an
 * admin, revoked, expired then): PERMISSION_DENIED at the site. `invalid`:
 * it is malformed, does not verify, or does not match: INVALID_ARGUMENT.
 */
export class JobSignatureProblem extends Error {
  constructor(
    readonly kind: "invalid" | "untrusted",
    message: string,
  ) {
    super(message);
    this.name = "JobSignatureProblem";
  }
}

/** The manifest's content for a definition: one deterministic function, used by signers and verifiers alike. */
export function manifestContentOf(definition: JobDefinition): ManifestContent {
  const apps: Record<string, ManifestApp> = {};
  for (const app of definition.apps) {
    if (Object.hasOwn(apps, app.name)) throw new JobSignatureProblem("invalid", `apps: app ${JSON.stringify(app.name)} appears twice; a signed job names each app once`);
    const files: Record<string, string> = {};
    for (const file of app.files) {
      if (Object.hasOwn(files, file.path)) throw new JobSignatureProblem("invalid", `apps.${app.name}.files: ${JSON.stringify(file.path)} appears twice`);
      // An uploaded artifact is covered by its digest: the site checked the bytes against it, and anyone holding them can again.
      files[file.path] = file.artifact ? file.artifact.sha256 : createHash("sha256").update(file.content).digest("hex");
    }
    apps[app.name] = { server_config: asJson(app.serverConfig), client_config: asJson(app.clientConfig), files };
  }
  const deployMap: Record<string, string[]> = {};
  for (const { appName, sites } of definition.deployMap) {
    if (Object.hasOwn(deployMap, appName)) throw new JobSignatureProblem("invalid", `deploy_map: app ${JSON.stringify(appName)} appears twice; list all its sites in one entry`);
    deployMap[appName] = [...sites];
  }
  return {
    name: definition.name,
    deploy_map: deployMap,
    min_clients: definition.minClients,
    mandatory_clients: [...definition.mandatoryClients],
    resource_spec: Object.fromEntries(Object.entries(definition.resourceSpec).map(([client, requirement]) => [client, { ...requirement.resources }])),
    apps,
  };
}

/**
 * Signs a definition with an admin's kit: a fresh manifest (signed now, with
 * a random nonce) and its ECDSA P-256 / SHA-256 signature, DER.
 */
export function signJobDefinition(definition: JobDefinition, kit: CertifiedKit, now = new Date()): JobSignature {
  const manifest: JobManifest = {
    format: JOB_MANIFEST_FORMAT,
    project: kit.identity.project,
    ...manifestContentOf(definition),
    signer: kit.identity.name,
    signed_at: now.toISOString(),
    nonce: randomBytes(16).toString("hex"),
  };
  const bytes = Buffer.from(canonicalJson(manifest), "utf8");
  return { manifest: bytes, signature: sign("sha256", bytes, createPrivateKey(kit.key)), signerCertificatePem: kit.cert.toString("utf8") };
}

export interface VerifiedSignature {
  manifest: JobManifest;
  /** The signer, as its certificate says: an admin of the project. */
  signer: Identity;
  certificate: X509Certificate;
  signedAt: Date;
}

/**
 * Checks a signature as far as it can be checked without the job: the
 * manifest is a v1 manifest, the signer's certificate was issued by `ca`
 * and valid when it signed, it is an admin's of `project`, the manifest
 * names it and its project, and the signature over the manifest verifies.
 * Throws JobSignatureProblem naming what is wrong. Revocation is the
 * caller's business (only the site holds the revocation list).
 */
export function verifyJobSignature(signature: JobSignature, ca: X509Certificate, project: string, now = new Date()): VerifiedSignature {
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(signature.signerCertificatePem);
  } catch (error) {
    throw new JobSignatureProblem("invalid", `signer_certificate_pem is not a PEM X.509 certificate (${(error as Error).message})`);
  }
  const subject = certificate.subject.replaceAll("\n", ", ");
  if (!certificate.checkIssued(ca) || !certificate.verify(ca.publicKey)) {
    throw new JobSignatureProblem("untrusted", `the signer's certificate (${subject}) was not issued by this project's CA (${ca.subject.replaceAll("\n", ", ")})`);
  }
  const key = certificate.publicKey;
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw new JobSignatureProblem("invalid", `the signer's certificate (${subject}) holds no ECDSA P-256 key`);
  }
  if (!verify("sha256", signature.manifest, key, signature.signature)) {
    throw new JobSignatureProblem("invalid", `the signature does not verify over the manifest with the key of ${subject}: the manifest was altered after signing, or signed with another key`);
  }
  const manifest = parseManifest(signature.manifest);
  let signer: Identity;
  try {
    signer = identityOfCertificate(certificate);
  } catch (error) {
    throw new JobSignatureProblem("untrusted", `the signer's certificate: ${(error as Error).message}`);
  }
  if (signer.kind !== "admin") throw new JobSignatureProblem("untrusted", `the job is signed by ${describeIdentity(signer)}: only an admin's certificate may sign jobs`);
  if (signer.project !== project) throw new JobSignatureProblem("untrusted", `the signer's certificate was issued for project ${signer.project}, not ${project}`);
  if (manifest.signer !== signer.name) throw new JobSignatureProblem("invalid", `manifest.signer ${JSON.stringify(manifest.signer)} is not the signer's certificate's name ${JSON.stringify(signer.name)}`);
  if (manifest.project !== signer.project) throw new JobSignatureProblem("invalid", `manifest.project ${JSON.stringify(manifest.project)} is not the signer's project ${JSON.stringify(signer.project)}`);
  const signedAt = new Date(manifest.signed_at);
  if (signedAt.getTime() > now.getTime() + SIGNING_CLOCK_SKEW_MS) {
    throw new JobSignatureProblem("invalid", `manifest.signed_at ${manifest.signed_at} is in the future (this clock says ${now.toISOString()}); check the signer's clock`);
  }
  for (const [what, cert] of [["the signer's certificate", certificate], ["the project CA", ca]] as const) {
    if (signedAt < new Date(cert.validFrom) || signedAt > new Date(cert.validTo)) {
      throw new JobSignatureProblem("untrusted", `${what} was not valid at manifest.signed_at ${manifest.signed_at} (valid ${cert.validFrom} to ${cert.validTo})`);
    }
  }
  return { manifest, signer, certificate, signedAt };
}

/** Parses and validates a manifest's bytes; JobSignatureProblem naming the field otherwise. */
export function parseManifest(bytes: Uint8Array): JobManifest {
  let document: unknown;
  try {
    document = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (error) {
    throw new JobSignatureProblem("invalid", `the manifest is not UTF-8 JSON (${(error as Error).message})`);
  }
  const parsed = manifestSchema.safeParse(document);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new JobSignatureProblem("invalid", `manifest${issue.path.map((key) => `.${String(key)}`).join("")}: ${issue.message}`);
  }
  return parsed.data as JobManifest;
}

/**
 * Where the manifest and the definition differ: the first content field
 * that does, with both values; undefined when they agree.
 */
export function manifestMismatch(manifest: JobManifest, definition: JobDefinition): string | undefined {
  const content = manifestContentOf(definition);
  for (const field of CONTENT_FIELDS) {
    const difference = firstDifference(manifest[field] as Json, content[field] as unknown as Json, field);
    if (difference) return `${difference.path}: the signed manifest has ${brief(difference.signed)}, the definition has ${brief(difference.actual)}`;
  }
  return undefined;
}

/** The first path at which two JSON values differ (objects by key regardless of order, lists in order). */
export function firstDifference(signed: Json | undefined, actual: Json | undefined, path: string): { path: string; signed: Json | undefined; actual: Json | undefined } | undefined {
  if (isObject(signed) && isObject(actual)) {
    for (const key of [...new Set([...Object.keys(signed), ...Object.keys(actual)])].sort()) {
      const difference = firstDifference(signed[key], actual[key], `${path}${/^[A-Za-z_][\w-]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`}`);
      if (difference) return difference;
    }
    return undefined;
  }
  if (Array.isArray(signed) && Array.isArray(actual) && signed.length === actual.length) {
    for (const [index, item] of signed.entries()) {
      const difference = firstDifference(item, actual[index], `${path}[${index}]`);
      if (difference) return difference;
    }
    return undefined;
  }
  return canonicalJson(signed ?? null) === canonicalJson(actual ?? null) && (signed === undefined) === (actual === undefined) ? undefined : { path, signed, actual };
}

/** JSON with object keys sorted and no whitespace: the same value always gives the same bytes. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

/** One digest per distinct signature (manifest, signature and certificate together), for caches. */
export function signatureDigest(signature: JobSignature): string {
  const hash = createHash("sha256");
  for (const part of [signature.manifest, signature.signature, Buffer.from(signature.signerCertificatePem, "utf8")]) {
    const length = Buffer.alloc(8);
    length.writeBigUInt64BE(BigInt(part.length));
    hash.update(length).update(part);
  }
  return hash.digest("hex");
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object" && !(value instanceof Uint8Array)) {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .filter((key) => (value as Record<string, unknown>)[key] !== undefined)
        .map((key) => [key, sortKeys((value as Record<string, unknown>)[key])]),
    );
  }
  return value;
}

/** A Struct as plain JSON (what it would read as from the folder's file); null when unset. */
function asJson(struct: { [key: string]: unknown } | undefined): JsonObject | null {
  return struct === undefined ? null : (JSON.parse(JSON.stringify(struct)) as JsonObject);
}

function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function brief(value: Json | undefined): string {
  if (value === undefined) return "nothing";
  const text = JSON.stringify(value);
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}
