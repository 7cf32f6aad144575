import { createHash, randomBytes } from "node:crypto";
import type { Logger } from "../shared/logger.js";
import type { DataExchange } from "../shared/payload.js";
import { carriesData, ReturnCode } from "../shared/return-codes.js";
import { DType, float32Values, type Tensor } from "../shared/tensor.js";
import { ProtocolViolation } from "./errors.js";
import { checkKeyBytes, generateKeyPair, type RawKeyPair } from "./key-agreement.js";
import { applyMasks, MaskStream, pairwiseMaskSeed, pairwiseSign, selfMaskKey, type SignedMask } from "./mask-stream.js";
import { bytesByName, type PhaseMeta, phaseOf, protocolMessage, roundContext, SECAGG_META, TENSORS, withoutProtocol } from "./protocol.js";
import { Quantization } from "./quantization.js";
import { MAX_HOLDERS, splitSecret } from "./shamir.js";
import { openShares, type SharePair, sealShares, shareKey } from "./share-encryption.js";

/** The public keys a neighbour advertised. */
interface PeerKeys {
  encryptionKey: Buffer;
  maskKey: Buffer;
}

/**
 * One client's round, as a state machine:
 * advertised (keys sent) -> shared (sealed shares sent) -> training (the
 * trainer holds the task) -> sealed (the masked result left) -> over (the
 * unmasking shares left, or the round failed). The private keys and the seed
 * live only here, in this process's memory, and go with the round.
 */
interface ClientRound {
  jobId: string;
  round: number;
  context: string;
  state: "advertised" | "shared" | "training" | "sealed";
  encryption: RawKeyPair;
  mask: RawKeyPair;
  threshold?: number;
  /** The neighbours (this client excluded) and their keys, from share_keys. */
  neighbours?: Map<string, PeerKeys>;
  seed?: Buffer;
  /** This client's own share of its own secrets. */
  ownShares?: SharePair;
  /** The neighbours that shared keys (this client excluded): the pairwise masks to add. */
  participants?: string[];
  quantization?: Quantization;
  trainTaskId?: string;
}

/** What the agent does with a task of the protocol. */
export type Interception =
  /** A protocol task the agent answers itself, with this data (or refuses, when the promise rejects with the reason). */
  | { answer: Promise<DataExchange> }
  /** The training task: hand the trainer this data (the protocol's parts removed); seal() masks its result. */
  | { trainerData: DataExchange };

/**
 * The client's side of secure aggregation (Bonawitz et al. 2017; the
 * neighbour graph of Bell et al. 2020), run by the agent runtime for its
 * trainer: it answers the protocol's tasks itself and masks the trainer's
 * result before it leaves, so any trainer (a TypeScript one, one behind the
 * trainer API) takes part without knowing. One round per job at a time.
 */
export class SecureAggregationClient {
  private readonly rounds = new Map<string, ClientRound>();

  constructor(
    readonly clientName: string,
    private readonly logger: Logger,
  ) {}

  /**
   * Looks at a task: undefined when it is not part of the protocol.
   * Throws ProtocolViolation (the agent refuses the task with its message)
   * when a training task breaks the protocol.
   */
  intercept(task: { taskId: string; jobId: string }, data: DataExchange): Interception | undefined {
    let phase: PhaseMeta | undefined;
    try {
      phase = phaseOf(data);
    } catch (error) {
      return { answer: Promise.reject(error) };
    }
    switch (phase?.phase) {
      case undefined:
        return undefined;
      case "advertise_keys":
        return { answer: Promise.resolve().then(() => this.advertiseKeys(task.jobId, phase.round)) };
      case "share_keys":
        return { answer: Promise.resolve().then(() => this.shareKeys(task.jobId, phase, data)) };
      case "masked_input":
        return { trainerData: this.beginTraining(task, phase, data) };
      case "unmask":
        return { answer: Promise.resolve().then(() => this.unmask(task.jobId, phase, data)) };
    }
  }

  /** Whether the result of `taskId` must be masked by seal() before it leaves. */
  masks(taskId: string): boolean {
    return this.roundOfTask(taskId) !== undefined;
  }

  /**
   * The trainer's result, quantized and masked: INT32 tensors (read as uint32
   * modulo 2^32) of the same names and shapes. Nothing of the plain result
   * leaves: a failed task, or a result that cannot be masked (not FLOAT32),
   * goes without its data.
   */
  async seal(taskId: string, data: DataExchange | undefined, returnCode: ReturnCode): Promise<{ data: DataExchange | undefined; returnCode: ReturnCode }> {
    const round = this.roundOfTask(taskId)!;
    if (!carriesData(returnCode) || !data) {
      this.forget(round.jobId);
      return { data: undefined, returnCode: returnCode === ReturnCode.RETURN_CODE_OK ? ReturnCode.RETURN_CODE_EXECUTION_EXCEPTION : returnCode };
    }
    try {
      const tensors = await this.maskTensors(round, data.tensors);
      round.state = "sealed";
      return { data: { ...data, tensors, meta: { ...data.meta, [SECAGG_META]: { phase: "masked_input", round: round.round } } }, returnCode };
    } catch (error) {
      this.logger.warn({ job: round.jobId, task: taskId, reason: (error as Error).message }, "secure aggregation: the result cannot be masked; it is not sent");
      this.forget(round.jobId);
      return { data: undefined, returnCode: ReturnCode.RETURN_CODE_EXECUTION_RESULT_ERROR };
    }
  }

  /** Drops a job's round and its secrets (the job ended, or a new round began). */
  forget(jobId: string): void {
    const round = this.rounds.get(jobId);
    if (!round) return;
    for (const secret of [round.encryption.privateKey, round.mask.privateKey, round.seed]) secret?.fill(0);
    this.rounds.delete(jobId);
  }

  private advertiseKeys(jobId: string, round: number): DataExchange {
    this.forget(jobId);
    const state: ClientRound = { jobId, round, context: roundContext(jobId, round), state: "advertised", encryption: generateKeyPair(), mask: generateKeyPair() };
    this.rounds.set(jobId, state);
    this.logger.debug({ job: jobId, round }, "secure aggregation: keys advertised");
    return protocolMessage({ phase: "advertise_keys", round }, [
      [TENSORS.encryptionKey, state.encryption.publicKey],
      [TENSORS.maskKey, state.mask.publicKey],
    ]);
  }

  private async shareKeys(jobId: string, phase: Extract<PhaseMeta, { phase: "share_keys" }>, data: DataExchange): Promise<DataExchange> {
    const round = this.expect(jobId, phase.round, "advertised");
    const holders = [...new Set(phase.neighbours)].sort();
    if (holders.length !== phase.neighbours.length) throw new ProtocolViolation("meta.secagg.neighbours: a client is named twice");
    if (!holders.includes(this.clientName)) throw new ProtocolViolation(`meta.secagg.neighbours: does not name this client (${this.clientName})`);
    if (holders.length > MAX_HOLDERS) throw new ProtocolViolation(`meta.secagg.neighbours: ${holders.length} clients, at most ${MAX_HOLDERS}`);
    if (phase.threshold > holders.length) throw new ProtocolViolation(`meta.secagg.threshold: ${phase.threshold} is more than the ${holders.length} clients sharing`);
    const bytes = bytesByName(data);
    const neighbours = new Map<string, PeerKeys>();
    const seen = new Set<string>();
    for (const client of holders) {
      const keys = { encryptionKey: checkKeyBytes(`tensor ${TENSORS.encryptionKeyOf(client)}`, bytes.get(TENSORS.encryptionKeyOf(client))), maskKey: checkKeyBytes(`tensor ${TENSORS.maskKeyOf(client)}`, bytes.get(TENSORS.maskKeyOf(client))) };
      for (const key of [keys.encryptionKey, keys.maskKey]) {
        if (seen.has(key.toString("hex"))) throw new ProtocolViolation(`the keys of ${client}: a key given twice in the round`);
        seen.add(key.toString("hex"));
      }
      if (client === this.clientName) {
        if (!keys.encryptionKey.equals(round.encryption.publicKey) || !keys.maskKey.equals(round.mask.publicKey)) throw new ProtocolViolation("the keys named as this client's are not the ones it advertised");
      } else neighbours.set(client, keys);
    }
    const seed = randomBytes(32);
    const [privateKeyShares, seedShares] = await Promise.all([splitSecret(round.mask.privateKey, holders.length, phase.threshold), splitSecret(seed, holders.length, phase.threshold)]);
    const sealed: Array<[string, Uint8Array]> = [];
    holders.forEach((client, index) => {
      const pair = { privateKeyShare: privateKeyShares[index]!, seedShare: seedShares[index]! };
      if (client === this.clientName) return void (round.ownShares = pair);
      const key = shareKey(round.encryption.privateKey, neighbours.get(client)!.encryptionKey, round.context);
      sealed.push([TENSORS.sealedShares(client), sealShares(key, { context: round.context, from: this.clientName, to: client }, pair)]);
    });
    Object.assign(round, { state: "shared", threshold: phase.threshold, neighbours, seed });
    this.logger.debug({ job: jobId, round: round.round, neighbours: neighbours.size, threshold: phase.threshold }, "secure aggregation: shares sent");
    return protocolMessage({ phase: "share_keys", round: round.round }, [...sealed, [TENSORS.seedCommitment, createHash("sha256").update(seed).digest()]]);
  }

  private beginTraining(task: { taskId: string; jobId: string }, phase: Extract<PhaseMeta, { phase: "masked_input" }>, data: DataExchange): DataExchange {
    const round = this.expect(task.jobId, phase.round, "shared");
    const listed = new Set(phase.participants);
    if (!listed.has(this.clientName)) throw new ProtocolViolation(`meta.secagg.participants: does not name this client (${this.clientName}), which shared its keys`);
    const participants = [...round.neighbours!.keys()].filter((client) => listed.has(client));
    if (participants.length + 1 < round.threshold!) {
      throw new ProtocolViolation(`only ${participants.length + 1} of this client's neighbourhood shared keys, fewer than the threshold ${round.threshold}: the sum could not be unmasked without exposing a result`);
    }
    if (phase.contributors < listed.size) throw new ProtocolViolation(`meta.secagg.contributors: ${phase.contributors} is less than the ${listed.size} participants, so their sum could overflow`);
    Object.assign(round, { state: "training", participants, quantization: new Quantization(phase.clip_range, phase.contributors), trainTaskId: task.taskId });
    return withoutProtocol(data);
  }

  private async maskTensors(round: ClientRound, tensors: readonly Tensor[]): Promise<Tensor[]> {
    const ordered = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const tensor of ordered) {
      if (tensor.dtype !== DType.D_TYPE_FLOAT32) throw new ProtocolViolation(`tensor ${JSON.stringify(tensor.name)} is ${DType[tensor.dtype]}: only FLOAT32 results are aggregated securely`);
    }
    const masks: SignedMask[] = [{ stream: new MaskStream(selfMaskKey(round.seed!, round.context)), sign: 1 }];
    for (const peer of round.participants!) {
      const seed = pairwiseMaskSeed(round.mask.privateKey, round.neighbours!.get(peer)!.maskKey, round.context);
      masks.push({ stream: new MaskStream(seed), sign: pairwiseSign(this.clientName, peer) });
    }
    const masked: Tensor[] = [];
    let clipped = 0;
    for (const tensor of ordered) {
      const levels = new Int32Array(float32Values(tensor).length);
      clipped += round.quantization!.quantize(float32Values(tensor), levels);
      await applyMasks(levels, masks);
      masked.push({ name: tensor.name, dtype: DType.D_TYPE_INT32, shape: tensor.shape, data: Buffer.from(levels.buffer) });
    }
    if (clipped) this.logger.warn({ job: round.jobId, round: round.round, clipped, clipRange: round.quantization!.clipRange }, "secure aggregation: values outside the clip range were clipped");
    return masked;
  }

  private unmask(jobId: string, phase: Extract<PhaseMeta, { phase: "unmask" }>, data: DataExchange): DataExchange {
    const round = this.expect(jobId, phase.round, "sealed");
    try {
      const survivors = new Set(phase.survivors);
      const dropped = new Set(phase.dropped);
      const neighbourhood = new Set([this.clientName, ...round.participants!]);
      for (const client of dropped) {
        // The one rule that keeps every result private: never reveal both secrets of one client.
        if (survivors.has(client)) throw new ProtocolViolation(`meta.secagg: ${client} is named both a survivor and dropped`);
        if (!neighbourhood.has(client)) throw new ProtocolViolation(`meta.secagg.dropped: ${client} did not share keys with this client`);
      }
      for (const client of survivors) if (!neighbourhood.has(client)) throw new ProtocolViolation(`meta.secagg.survivors: ${client} did not share keys with this client`);
      if (!survivors.has(this.clientName)) throw new ProtocolViolation(`meta.secagg.survivors: does not name this client, whose masked result was sent`);
      if (survivors.size < round.threshold!) throw new ProtocolViolation(`meta.secagg.survivors: ${survivors.size} survivors, fewer than the threshold ${round.threshold}`);
      const bytes = bytesByName(data);
      const given: Array<[string, Uint8Array]> = [];
      for (const owner of [...survivors, ...dropped]) {
        const pair = owner === this.clientName ? round.ownShares! : this.openFrom(round, owner, bytes.get(TENSORS.sealedShares(owner)));
        if (!pair) continue;
        given.push(survivors.has(owner) ? [TENSORS.seedShare(owner), pair.seedShare] : [TENSORS.privateKeyShare(owner), pair.privateKeyShare]);
      }
      this.logger.debug({ job: jobId, round: round.round, survivors: survivors.size, dropped: dropped.size }, "secure aggregation: unmasking shares sent");
      return protocolMessage({ phase: "unmask", round: round.round }, given);
    } finally {
      // Answered or refused, this round asks nothing more of this client: its secrets go now.
      this.forget(jobId);
    }
  }

  /** The shares `owner` sealed for this client, or undefined (logged) when they did not come or do not open: the site needs only the threshold of them. */
  private openFrom(round: ClientRound, owner: string, sealed: Buffer | undefined): SharePair | undefined {
    if (!sealed) {
      this.logger.warn({ job: round.jobId, round: round.round, owner }, "secure aggregation: the site did not route the shares of a neighbour");
      return undefined;
    }
    try {
      const key = shareKey(round.encryption.privateKey, round.neighbours!.get(owner)!.encryptionKey, round.context);
      return openShares(key, { context: round.context, from: owner, to: this.clientName }, sealed);
    } catch (error) {
      this.logger.warn({ job: round.jobId, round: round.round, owner, reason: (error as Error).message }, "secure aggregation: a neighbour's shares are unusable");
      return undefined;
    }
  }

  private expect(jobId: string, roundNumber: number, state: ClientRound["state"]): ClientRound {
    const round = this.rounds.get(jobId);
    if (!round || round.round !== roundNumber) throw new ProtocolViolation(`meta.secagg.round: this client has no keys for round ${roundNumber} of job ${jobId}`);
    if (round.state !== state) throw new ProtocolViolation(`this client's round ${roundNumber} is ${round.state}, the task needs it ${state}`);
    return round;
  }

  private roundOfTask(taskId: string): ClientRound | undefined {
    for (const round of this.rounds.values()) if (round.state === "training" && round.trainTaskId === taskId) return round;
    return undefined;
  }
}
