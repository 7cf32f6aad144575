import type { JobDefinition } from "../../../gen/campfire/admin/v1/job.js";
import { PermissionDenied } from "../../security/errors.js";
import { describeIdentity } from "../../security/identity.js";
import { JobSignatureProblem, manifestMismatch, type VerifiedSignature, verifyJobSignature } from "../../security/job-signing.js";
import type { SiteTrust } from "../../security/site-trust.js";
import { InvalidJobDefinition } from "./errors.js";

/**
 * The largest signature the site takes: it rides in every task of the job, and
 * control messages stay well under their 2 MiB limit. A manifest holds configs
 * and file digests, not files, so real ones are a few KiB.
 */
export const MAX_SIGNATURE_BYTES = 256 * 1024;

/** Who submits, as far as the signature check cares: `via` "certificate" when a TLS client certificate proved the name. */
export interface Submitter {
  name: string;
  via?: string;
}

/**
 * The site's check of a submitted job's signature (JobDefinition.signature),
 * before the job is stored: the signature verifies, its signer's certificate
 * is an admin's from the site's project CA and not revoked, the signer is the
 * caller itself when the caller proved its name with a certificate, and the
 * signed manifest says what the definition says. Throws InvalidJobDefinition
 * (INVALID_ARGUMENT) or PermissionDenied naming what is wrong.
 *
 * Returns the verified signature; undefined for an unsigned job, or on a site
 * without TLS (it holds no CA to check against: agents still check).
 * Agents never rely on this check: it spares an admin a job every agent
 * would refuse, and keeps forged signatures out of the store.
 */
export function checkSubmittedSignature(definition: JobDefinition, trust: SiteTrust | undefined, submitter: Submitter, now = new Date()): VerifiedSignature | undefined {
  const signature = definition.signature;
  if (!signature) return undefined;
  const size = signature.manifest.length + signature.signature.length + Buffer.byteLength(signature.signerCertificatePem);
  if (size > MAX_SIGNATURE_BYTES) {
    throw new InvalidJobDefinition(`signature: is ${size} bytes, more than the ${MAX_SIGNATURE_BYTES} this site attaches to tasks; keep large data in app files (the manifest holds only their digests), not in the configs`);
  }
  if (!trust) return undefined;
  let verified: VerifiedSignature;
  try {
    verified = verifyJobSignature(signature, trust.caCertificate, trust.project, now);
  } catch (error) {
    if (!(error instanceof JobSignatureProblem)) throw error;
    if (error.kind === "untrusted") throw new PermissionDenied(`signature: ${error.message}`);
    throw new InvalidJobDefinition(`signature: ${error.message}; sign the job again (campfire submit signs with your kit)`);
  }
  try {
    trust.identify({ address: "job signature", tls: true, certificate: verified.certificate });
  } catch (error) {
    throw new PermissionDenied(`signature: ${(error as Error).message}`);
  }
  if (submitter.via === "certificate" && submitter.name !== verified.signer.name) {
    throw new PermissionDenied(`signature: the job is signed by ${describeIdentity(verified.signer)}, but submitted by ${submitter.name}; submit only jobs signed with your own key`);
  }
  let mismatch: string | undefined;
  try {
    mismatch = manifestMismatch(verified.manifest, definition);
  } catch (error) {
    if (error instanceof JobSignatureProblem) throw new InvalidJobDefinition(`signature: ${error.message}`);
    throw error;
  }
  if (mismatch) {
    throw new InvalidJobDefinition(`signature: the signed manifest does not match the definition: ${mismatch}; the definition was changed after it was signed, so sign it again`);
  }
  return verified;
}
