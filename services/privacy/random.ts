import { createCipheriv, createHash, randomFillSync } from "node:crypto";

/** Fills a buffer with random bytes. */
type ByteSource = (bytes: Uint8Array) => void;

/** Normals drawn per refill of the byte buffer. */
const BATCH = 4096;
/** 2^-53: a 53-bit integer times this is a double in [0, 1). */
const TWO_POW_MINUS_53 = 2 ** -53;

/**
 * Standard normal samples from a cryptographically secure source: node:crypto's
 * generator, or, for tests only, AES-256-CTR's keystream under a key derived
 * from a seed (deterministic in this implementation, not across languages).
 * Box-Muller on 53-bit uniforms: each pair of uniforms gives two independent
 * normals. The noise of differential privacy must not be predictable by the
 * party it hides from, so Math.random() (xorshift, its state recoverable from
 * its outputs) is never used.
 */
export class GaussianSource {
  private readonly words = new Uint32Array(BATCH * 2);
  private readonly bytes = new Uint8Array(this.words.buffer);
  private readonly normals = new Float64Array(BATCH);
  private next = BATCH;

  private constructor(private readonly fill: ByteSource) {}

  /** Secure randomness (node:crypto), or a deterministic stream for `seed` (tests). */
  static create(seed?: number): GaussianSource {
    if (seed === undefined) return new GaussianSource((bytes) => randomFillSync(bytes));
    const key = createHash("sha256").update(`campfire gaussian_noise seed ${seed}`).digest();
    const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
    return new GaussianSource((bytes) => bytes.set(cipher.update(Buffer.alloc(bytes.length))));
  }

  /** One N(0, 1) sample. */
  sample(): number {
    if (this.next === BATCH) this.refill();
    return this.normals[this.next++]!;
  }

  private refill(): void {
    this.fill(this.bytes);
    const words = this.words;
    for (let index = 0; index < BATCH; index += 2) {
      const u1 = uniform(words[2 * index]!, words[2 * index + 1]!);
      const u2 = uniform(words[2 * index + 2]!, words[2 * index + 3]!);
      // 1 - u1 lies in (0, 1]: its logarithm is finite.
      const radius = Math.sqrt(-2 * Math.log(1 - u1));
      this.normals[index] = radius * Math.cos(2 * Math.PI * u2);
      this.normals[index + 1] = radius * Math.sin(2 * Math.PI * u2);
    }
    this.next = 0;
  }
}

/** A double in [0, 1) from 53 random bits of two words. */
function uniform(high: number, low: number): number {
  return ((high >>> 5) * 2 ** 26 + (low >>> 6)) * TWO_POW_MINUS_53;
}

