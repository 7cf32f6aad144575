import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { ProtocolViolation } from "./errors.js";
import { agree, deriveKey } from "./key-agreement.js";
import { SHARE_BYTES } from "./shamir.js";

const IV_BYTES = 12;
const TAG_BYTES = 16;
/** What one client gives another: its share of its mask key pair's private key and its share of its self-mask seed. */
export interface SharePair {
  privateKeyShare: Buffer;
  seedShare: Buffer;
}
/** The sealed form of a SharePair as the site routes it: IV, ciphertext, GCM tag. */
export const SEALED_SHARES_BYTES = IV_BYTES + 2 * SHARE_BYTES + TAG_BYTES;

/** Who sends to whom in which round: the additional data every sealed share is bound to, so that the site cannot replay it elsewhere. */
export interface ShareRoute {
  context: string;
  from: string;
  to: string;
}

/** The key the two ends of a route share: HKDF of their encryption keys' X25519 agreement (the same from either end). */
export function shareKey(ownPrivateKey: Uint8Array, peerPublicKey: Uint8Array, context: string): Buffer {
  return deriveKey(agree(ownPrivateKey, peerPublicKey), context, "campfire secure aggregation: share encryption");
}

/** AES-256-GCM of the pair, readable only by the route's other end; the site sees its length and nothing else. */
export function sealShares(key: Buffer, route: ShareRoute, shares: SharePair): Buffer {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(routeBytes(route));
  const body = Buffer.concat([cipher.update(shares.privateKeyShare), cipher.update(shares.seedShare), cipher.final()]);
  return Buffer.concat([iv, body, cipher.getAuthTag()]);
}

/** Opens a sealed pair; throws ProtocolViolation, naming the sender, when it was not sealed for this route or was changed on the way. */
export function openShares(key: Buffer, route: ShareRoute, sealed: Uint8Array): SharePair {
  if (sealed.length !== SEALED_SHARES_BYTES) throw new ProtocolViolation(`the shares from ${route.from} are ${sealed.length} bytes, expected ${SEALED_SHARES_BYTES}`);
  const decipher = createDecipheriv("aes-256-gcm", key, sealed.subarray(0, IV_BYTES));
  decipher.setAAD(routeBytes(route));
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  let plain: Buffer;
  try {
    plain = Buffer.concat([decipher.update(sealed.subarray(IV_BYTES, sealed.length - TAG_BYTES)), decipher.final()]);
  } catch {
    throw new ProtocolViolation(`the shares from ${route.from} do not decrypt: not sealed for ${route.to} in this round, or changed on the way`);
  }
  return { privateKeyShare: plain.subarray(0, SHARE_BYTES), seedShare: plain.subarray(SHARE_BYTES) };
}

function routeBytes(route: ShareRoute): Buffer {
  return Buffer.from(JSON.stringify([route.context, route.from, route.to]));
}
