import { type Cipher, createCipheriv } from "node:crypto";
import { setImmediate as yieldToLoop } from "node:timers/promises";
import { agree, deriveKey, KEY_BYTES } from "./key-agreement.js";

/** Words of a mask made at a time: masks are applied chunk by chunk, never held whole. */
export const MASK_CHUNK_WORDS = 256 * 1024;
const ZEROS = Buffer.alloc(MASK_CHUNK_WORDS * 4);
/** Each seed keys one stream only (a fresh key per round and purpose), so a fixed counter block is safe. */
const COUNTER_START = Buffer.alloc(16);

/**
 * A mask: the AES-256-CTR keystream of a 32-byte seed, read as 32-bit words.
 * Both ends (a client masking, the site unmasking) expand the same seed to the
 * same words, as long as each reads the stream in the same order: the flat
 * vector of the model's tensors sorted by name (see layout.ts).
 */
export class MaskStream {
  private readonly cipher: Cipher;

  constructor(seed: Uint8Array) {
    if (seed.length !== KEY_BYTES) throw new RangeError(`a mask seed has ${KEY_BYTES} bytes, got ${seed.length}`);
    this.cipher = createCipheriv("aes-256-ctr", seed, COUNTER_START);
  }

  /** The next `words` words (at most MASK_CHUNK_WORDS) of the mask. */
  next(words: number): Int32Array {
    if (words > MASK_CHUNK_WORDS) throw new RangeError(`at most ${MASK_CHUNK_WORDS} words at a time, asked for ${words}`);
    const bytes = this.cipher.update(ZEROS.subarray(0, words * 4));
    return new Int32Array(bytes.buffer, bytes.byteOffset, words);
  }
}

/** A mask and whether it is added (+1) or taken away (-1). */
export interface SignedMask {
  stream: MaskStream;
  sign: 1 | -1;
}

/**
 * Adds (or takes away) the next words of each mask to `target`, modulo 2^32:
 * int32 arithmetic wraps, so `| 0` is addition in Z/2^32. Yields to the event
 * loop between chunks, so that heartbeats go on while a large model is masked.
 */
export async function applyMasks(target: Int32Array, masks: readonly SignedMask[]): Promise<void> {
  for (let start = 0; start < target.length; start += MASK_CHUNK_WORDS) {
    if (start > 0) await yieldToLoop();
    const chunk = target.subarray(start, Math.min(target.length, start + MASK_CHUNK_WORDS));
    for (const { stream, sign } of masks) {
      const mask = stream.next(chunk.length);
      if (sign === 1) for (let index = 0; index < chunk.length; index++) chunk[index] = (chunk[index]! + mask[index]!) | 0;
      else for (let index = 0; index < chunk.length; index++) chunk[index] = (chunk[index]! - mask[index]!) | 0;
    }
  }
}

const SELF_MASK = "campfire secure aggregation: self mask";
const PAIRWISE_MASK = "campfire secure aggregation: pairwise mask";

/** The self-mask seed's key for the mask stream; the site derives the same from the seed it rebuilds. */
export function selfMaskKey(seed: Uint8Array, context: string): Buffer {
  return deriveKey(seed, context, SELF_MASK);
}

/** The seed of the mask two clients share: from either side's private key and the other's public key. */
export function pairwiseMaskSeed(privateKey: Uint8Array, peerPublicKey: Uint8Array, context: string): Buffer {
  return deriveKey(agree(privateKey, peerPublicKey), context, PAIRWISE_MASK);
}

/** The lower-named of two clients adds their pairwise mask, the other takes it away: in the sum it cancels. */
export function pairwiseSign(client: string, peer: string): 1 | -1 {
  return client < peer ? 1 : -1;
}
