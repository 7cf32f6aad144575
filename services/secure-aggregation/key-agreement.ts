import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, type KeyObject } from "node:crypto";
import { ProtocolViolation } from "./errors.js";

/** The length of a raw X25519 key, public or private, and of the secrets derived from them. */
export const KEY_BYTES = 32;

/** DER framing that turns a raw X25519 key into the PKCS #8 / SPKI form node:crypto imports (RFC 8410). */
const PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");
const SPKI_PREFIX = Buffer.from("302a300506032b656e032100", "hex");

/** An X25519 key pair as raw bytes: the public half travels, the private half stays in the process (or, split, in Shamir shares). */
export interface RawKeyPair {
  publicKey: Buffer;
  privateKey: Buffer;
}

export function generateKeyPair(): RawKeyPair {
  const { publicKey, privateKey } = generateKeyPairSync("x25519");
  return {
    publicKey: publicKey.export({ type: "spki", format: "der" }).subarray(SPKI_PREFIX.length),
    privateKey: privateKey.export({ type: "pkcs8", format: "der" }).subarray(PKCS8_PREFIX.length),
  };
}

/** The public key of a raw private key: how the site checks a private key rebuilt from shares against the one advertised. */
export function publicKeyOf(privateKey: Uint8Array): Buffer {
  return createPublicKey(privateKeyObject(privateKey)).export({ type: "spki", format: "der" }).subarray(SPKI_PREFIX.length);
}

/**
 * The X25519 shared secret of one side's private key and the other's public
 * key (the same from either side). Throws ProtocolViolation for a public key
 * of a small order, whose secret would be all zeros.
 */
export function agree(privateKey: Uint8Array, publicKey: Uint8Array): Buffer {
  let secret: Buffer;
  try {
    secret = diffieHellman({ privateKey: privateKeyObject(privateKey), publicKey: publicKeyObject(publicKey) });
  } catch (error) {
    throw new ProtocolViolation(`key agreement failed: ${(error as Error).message}`);
  }
  if (secret.every((byte) => byte === 0)) throw new ProtocolViolation("key agreement failed: the public key has a small order");
  return secret;
}

/**
 * A 32-byte key for one purpose ("share encryption", "pairwise mask", "self
 * mask") from a secret, bound to the round's context (job and round) by
 * HKDF-SHA-256, so that no key serves two purposes or two rounds.
 */
export function deriveKey(secret: Uint8Array, context: string, purpose: string): Buffer {
  return Buffer.from(hkdfSync("sha256", secret, context, purpose, KEY_BYTES));
}

/** Refuses anything but 32 bytes, naming `field`. */
export function checkKeyBytes(field: string, key: Uint8Array | undefined): Buffer {
  if (!key) throw new ProtocolViolation(`${field}: missing`);
  if (key.length !== KEY_BYTES) throw new ProtocolViolation(`${field}: ${key.length} bytes, an X25519 key has ${KEY_BYTES}`);
  return Buffer.from(key);
}

function privateKeyObject(raw: Uint8Array): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, checkKeyBytes("private key", raw)]), format: "der", type: "pkcs8" });
}

function publicKeyObject(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, checkKeyBytes("public key", raw)]), format: "der", type: "spki" });
}
