import { combine, split } from "shamir-secret-sharing";
import { ProtocolViolation } from "./errors.js";
import { KEY_BYTES } from "./key-agreement.js";

/** A share of a 32-byte secret: 32 bytes of polynomial values and the share's x coordinate (shamir-secret-sharing's layout). */
export const SHARE_BYTES = KEY_BYTES + 1;
/** shamir-secret-sharing works in GF(256): at most 255 shares of a secret. */
export const MAX_HOLDERS = 255;

/** Splits a 32-byte secret into `holders` shares, any `threshold` of which rebuild it and fewer tell nothing of it. */
export async function splitSecret(secret: Uint8Array, holders: number, threshold: number): Promise<Buffer[]> {
  if (secret.length !== KEY_BYTES) throw new RangeError(`a secret to share has ${KEY_BYTES} bytes, got ${secret.length}`);
  if (threshold < 2 || threshold > holders || holders > MAX_HOLDERS) throw new RangeError(`cannot split among ${holders} holders with threshold ${threshold}`);
  // Plain Uint8Arrays: the library checks its arguments with instanceof, which a Buffer from another realm (a test runner's) fails.
  return (await split(Uint8Array.from(secret), holders, threshold)).map((share) => Buffer.from(share));
}

/** Checks one share's form, naming `field`: its length, and an x coordinate other than 0 (which would be the secret itself). */
export function checkShare(field: string, share: Uint8Array | undefined): Buffer {
  if (!share) throw new ProtocolViolation(`${field}: missing`);
  if (share.length !== SHARE_BYTES) throw new ProtocolViolation(`${field}: ${share.length} bytes, a share has ${SHARE_BYTES}`);
  if (share[SHARE_BYTES - 1] === 0) throw new ProtocolViolation(`${field}: x coordinate 0 is not a share`);
  return Buffer.from(share);
}

/**
 * The secret rebuilt from `shares` (at least the threshold of them, with
 * distinct x coordinates). Wrong shares give a wrong secret, not an error: the
 * caller checks the result against what the owner committed to.
 */
export async function combineShares(shares: readonly Uint8Array[]): Promise<Buffer> {
  const coordinates = new Set(shares.map((share) => share[SHARE_BYTES - 1]));
  if (coordinates.size !== shares.length) throw new ProtocolViolation("two shares have the same x coordinate");
  return Buffer.from(await combine(shares.map((share) => Uint8Array.from(share))));
}
