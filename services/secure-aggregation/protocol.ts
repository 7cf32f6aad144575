import { z } from "zod";
import { DataKind } from "../../gen/campfire/common/v1/exchange.js";
import type { DataExchange } from "../shared/payload.js";
import { DType, type Tensor } from "../shared/tensor.js";
import { ProtocolViolation } from "./errors.js";

/**
 * The protocol's messages as DataExchanges: what each phase's task and result
 * carry. Small fields ride in meta under SECAGG_META; byte strings (keys,
 * sealed shares, Shamir shares) as UINT8 tensors named below. The agent strips
 * both from a training task before the trainer sees it.
 */
export const SECAGG_META = "secagg";

/** The protocol's own tasks; training is the job's own train task, carrying SECAGG_META. */
export const PROTOCOL_TASKS = {
  advertiseKeys: "secagg_advertise_keys",
  shareKeys: "secagg_share_keys",
  unmask: "secagg_unmask",
} as const;

const PREFIX = "secagg/";
export const TENSORS = {
  /** A client's public keys: one for encrypting shares to it, one for agreeing pairwise masks. */
  encryptionKey: `${PREFIX}encryption_key`,
  maskKey: `${PREFIX}mask_key`,
  encryptionKeyOf: (client: string) => `${PREFIX}encryption_key/${client}`,
  maskKeyOf: (client: string) => `${PREFIX}mask_key/${client}`,
  /** SHA-256 of a client's self-mask seed, so that the site can check the seed it rebuilds from shares. */
  seedCommitment: `${PREFIX}seed_commitment`,
  /** Shares sealed for `peer` (in a share-keys result: to it; in an unmask task: from it). */
  sealedShares: (peer: string) => `${PREFIX}shares/${peer}`,
  /** Shamir shares given back at unmasking: of a survivor's seed, of a dropped client's mask private key. */
  seedShare: (owner: string) => `${PREFIX}seed_share/${owner}`,
  privateKeyShare: (owner: string) => `${PREFIX}private_key_share/${owner}`,
} as const;

const Round = z.number().int().min(0);
const Names = z.array(z.string().min(1)).max(100_000);

/** meta.secagg of each phase's task. */
export const PhaseMeta = z.discriminatedUnion("phase", [
  z.object({ phase: z.literal("advertise_keys"), round: Round }),
  z.object({ phase: z.literal("share_keys"), round: Round, threshold: z.number().int().min(2), neighbours: Names }),
  z.object({ phase: z.literal("masked_input"), round: Round, clip_range: z.number().positive(), contributors: z.number().int().min(1), participants: Names }),
  z.object({ phase: z.literal("unmask"), round: Round, survivors: Names, dropped: Names }),
]);
export type PhaseMeta = z.infer<typeof PhaseMeta>;

/** The protocol's part of a task, or undefined for a task that is not part of it; ProtocolViolation when malformed. */
export function phaseOf(data: DataExchange): PhaseMeta | undefined {
  const raw = data.meta?.[SECAGG_META];
  if (raw === undefined) return undefined;
  const parsed = PhaseMeta.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ProtocolViolation(`meta.${SECAGG_META}.${issue.path.join(".")}: ${issue.message}`);
  }
  return parsed.data;
}

const AnswerMeta = z.object({ phase: z.string(), round: Round });

/** Which phase and round an answer says it answers; ProtocolViolation when it says none. */
export function answerOf(data: DataExchange): z.infer<typeof AnswerMeta> {
  const parsed = AnswerMeta.safeParse(data.meta?.[SECAGG_META]);
  if (!parsed.success) throw new ProtocolViolation(`meta.${SECAGG_META}: must name the phase and round answered`);
  return parsed.data;
}

/** A protocol message: byte strings as UINT8 tensors, the phase's fields in meta. */
export function protocolMessage(meta: PhaseMeta | { phase: string; round: number }, bytes: Iterable<[string, Uint8Array]> = []): DataExchange {
  return { kind: DataKind.DATA_KIND_UNSPECIFIED, tensors: [...bytes].map(([name, value]) => bytesTensor(name, value)), values: undefined, meta: { [SECAGG_META]: meta } };
}

export function bytesTensor(name: string, bytes: Uint8Array): Tensor {
  return { name, dtype: DType.D_TYPE_UINT8, shape: [bytes.length], data: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
}

/** The byte strings of a message by tensor name; refuses tensors that are not UINT8 vectors or are named twice. */
export function bytesByName(data: DataExchange): Map<string, Buffer> {
  const byName = new Map<string, Buffer>();
  for (const tensor of data.tensors) {
    if (!tensor.name.startsWith(PREFIX)) continue;
    if (tensor.dtype !== DType.D_TYPE_UINT8 || tensor.shape.length !== 1) throw new ProtocolViolation(`tensor ${JSON.stringify(tensor.name)}: expected a UINT8 vector`);
    if (byName.has(tensor.name)) throw new ProtocolViolation(`tensor ${JSON.stringify(tensor.name)}: named twice`);
    byName.set(tensor.name, Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength));
  }
  return byName;
}

/** Refuses any protocol tensor a message should not carry (names of clients outside the round, fields of another phase). */
export function refuseExtra(byName: ReadonlyMap<string, Buffer>, expected: ReadonlySet<string>): void {
  for (const name of byName.keys()) if (!expected.has(name)) throw new ProtocolViolation(`tensor ${JSON.stringify(name)}: not expected in this message`);
}

/** The task as the trainer sees it: without the protocol's tensors and meta. */
export function withoutProtocol(data: DataExchange): DataExchange {
  const { [SECAGG_META]: _protocol, ...meta } = data.meta ?? {};
  return { ...data, tensors: data.tensors.filter((tensor) => !tensor.name.startsWith(PREFIX)), meta };
}

/** The context every key of the round is bound to: keys, masks and sealed shares of one job's round serve no other. */
export function roundContext(jobId: string, round: number): string {
  return `campfire secure aggregation v1|${jobId}|${round}`;
}
