import { createHash } from "node:crypto";
import type { Tensor } from "../shared/tensor.js";
import { float32Tensor } from "../shared/tensor.js";
import { RoundUnrecoverable } from "./errors.js";
import { publicKeyOf } from "./key-agreement.js";
import { applyMasks, MaskStream, pairwiseMaskSeed, pairwiseSign, selfMaskKey, type SignedMask } from "./mask-stream.js";
import type { SumTensor } from "./masked-sum.js";
import type { Quantization } from "./quantization.js";
import { combineShares } from "./shamir.js";

/** What the site knows of one client when it unmasks. */
export interface ClientRecord {
  maskKey: Buffer;
  seedCommitment: Buffer;
  neighbours: readonly string[];
}

export interface UnmaskingInput {
  context: string;
  threshold: number;
  clients: ReadonlyMap<string, ClientRecord>;
  /** The clients whose masked results are in the sum. */
  survivors: readonly string[];
  /** The clients that shared keys but whose masked results are not in the sum. */
  dropped: readonly string[];
  /** Shamir shares given back: survivors' seeds, dropped clients' mask private keys, by owner. */
  seedShares: ReadonlyMap<string, Uint8Array[]>;
  privateKeyShares: ReadonlyMap<string, Uint8Array[]>;
  sum: readonly SumTensor[];
  quantization: Quantization;
}

/**
 * The site's last step: rebuild each survivor's self-mask seed and each
 * dropped client's mask private key from the threshold of shares, check each
 * against what its owner committed to (the seed's SHA-256, the advertised
 * public key), take the survivors' self masks and the masks they shared with
 * dropped clients out of the sum, and read the mean of the survivors'
 * results out of it. Pairwise masks between survivors cancelled in the sum
 * already. Nothing here ever sees one client's result.
 */
export async function unmaskMean(input: UnmaskingInput): Promise<Tensor[]> {
  const masks: SignedMask[] = [];
  const survivors = new Set(input.survivors);
  for (const owner of input.survivors) {
    const seed = await rebuild(input, owner, input.seedShares, "self-mask seed");
    if (!createHash("sha256").update(seed).digest().equals(input.clients.get(owner)!.seedCommitment)) {
      throw new RoundUnrecoverable(`the self-mask seed of ${owner} rebuilt from its shares does not match its commitment: a share was wrong`);
    }
    masks.push({ stream: new MaskStream(selfMaskKey(seed, input.context)), sign: -1 });
  }
  for (const owner of input.dropped) {
    const privateKey = await rebuild(input, owner, input.privateKeyShares, "mask private key");
    const record = input.clients.get(owner)!;
    if (!publicKeyOf(privateKey).equals(record.maskKey)) throw new RoundUnrecoverable(`the mask private key of ${owner} rebuilt from its shares does not match its public key: a share was wrong`);
    for (const survivor of record.neighbours.filter((client) => survivors.has(client))) {
      // The survivor added sign x mask(survivor, owner); the owner's half never came, so that term stays in the sum until taken out here.
      const seed = pairwiseMaskSeed(privateKey, input.clients.get(survivor)!.maskKey, input.context);
      masks.push({ stream: new MaskStream(seed), sign: pairwiseSign(survivor, owner) === 1 ? -1 : 1 });
    }
  }
  const mean: Tensor[] = [];
  for (const tensor of input.sum) {
    await applyMasks(tensor.levels, masks);
    const values = new Float32Array(tensor.levels.length);
    input.quantization.dequantizeMean(tensor.levels, input.survivors.length, values);
    mean.push(float32Tensor(tensor.name, tensor.shape, values));
  }
  return mean;
}

async function rebuild(input: UnmaskingInput, owner: string, sharesByOwner: ReadonlyMap<string, Uint8Array[]>, what: string): Promise<Buffer> {
  const shares = sharesByOwner.get(owner) ?? [];
  if (shares.length < input.threshold) throw new RoundUnrecoverable(`only ${shares.length} shares of the ${what} of ${owner} came back, ${input.threshold} are needed`);
  return combineShares(shares);
}
