import { DataKind } from "../../gen/campfire/common/v1/exchange.js";
import type { DataExchange } from "../shared/payload.js";
import type { Tensor } from "../shared/tensor.js";
import type { StagedResult } from "../site/uploads/staged-result.js";
import { ProtocolViolation, RoundUnrecoverable } from "./errors.js";
import { checkKeyBytes } from "./key-agreement.js";
import { ModularSum } from "./masked-sum.js";
import { defaultThreshold, neighbourGraph } from "./neighbours.js";
import { answerOf, bytesByName, protocolMessage, refuseExtra, roundContext, SECAGG_META, TENSORS } from "./protocol.js";
import { Quantization } from "./quantization.js";
import { checkShare } from "./shamir.js";
import { SEALED_SHARES_BYTES } from "./share-encryption.js";
import { type ClientRecord, unmaskMean } from "./unmasking.js";

export interface SecureRoundOptions {
  jobId: string;
  round: number;
  /** The clients asked to take part. */
  clients: readonly string[];
  /** Values are clipped to +-clipRange before quantization. */
  clipRange: number;
  /** SecAgg+'s neighbour count; undefined: every client is every other's neighbour (SecAgg). */
  neighbours?: number;
  /** Shares needed to rebuild a secret; default defaultThreshold() of a neighbourhood. */
  threshold?: number;
}

/** A masked result as the site's session hands it over: staged on disk, or in memory. */
export interface MaskedResult {
  kind: DataKind;
  staged?: StagedResult;
  tensors?: readonly Tensor[];
}

type Phase = "advertise_keys" | "share_keys" | "masked_input" | "unmask" | "done";

/**
 * The site's side of one round of secure aggregation, as a state machine
 * whose phases follow Bonawitz et al.: advertise keys (every client sends two
 * public keys), share keys (each sends its Shamir shares, sealed for each
 * neighbour, and the site keeps them to route), masked input (each trains and
 * sends its quantized, masked result, folded into a sum modulo 2^32), unmask
 * (the survivors give back the shares the site needs, with the sealed shares
 * routed to them in that task) and finish (the site rebuilds the masks and
 * takes them out). Each accept*() refuses a malformed message with
 * ProtocolViolation, naming the field, and the round goes on without its
 * sender while the threshold can still be met; begin*() moves to the next
 * phase with the clients that answered, or throws RoundUnrecoverable.
 *
 * The site never holds a client's result unmasked: it sees keys, sealed
 * shares it cannot open, masked results it only adds, and, at the end, the
 * shares that unmask the sum and nothing else.
 */
export class SecureRound {
  readonly context: string;
  readonly threshold: number;
  private phase: Phase = "advertise_keys";
  private readonly keys = new Map<string, { encryptionKey: Buffer; maskKey: Buffer }>();
  private graph = new Map<string, string[]>();
  /** Sealed shares by recipient, then by sender. */
  private readonly mailboxes = new Map<string, Map<string, Buffer>>();
  private readonly commitments = new Map<string, Buffer>();
  private quantization: Quantization | undefined;
  private sum: ModularSum | undefined;
  private kind: DataKind | undefined;
  private readonly contributed = new Set<string>();
  private survivors: string[] = [];
  private dropped: string[] = [];
  private readonly seedShares = new Map<string, Uint8Array[]>();
  private readonly privateKeyShares = new Map<string, Uint8Array[]>();
  private readonly unmasked = new Set<string>();

  constructor(private readonly options: SecureRoundOptions) {
    this.context = roundContext(options.jobId, options.round);
    const n = options.clients.length;
    if (n < 3) throw new RoundUnrecoverable(`secure aggregation needs at least 3 clients, the job has ${n}: with 2, each could subtract its own result from the sum and learn the other's`);
    const neighbourhood = Math.min(options.neighbours ?? n - 1, n - 1) + 1;
    this.threshold = options.threshold ?? defaultThreshold(neighbourhood);
    if (this.threshold < 2 || this.threshold > neighbourhood) throw new RoundUnrecoverable(`threshold ${this.threshold}: must be between 2 and the neighbourhood's size, ${neighbourhood}`);
  }

  /** The phase's task for every client. */
  advertiseTask(): DataExchange {
    return protocolMessage({ phase: "advertise_keys", round: this.options.round });
  }

  acceptKeys(client: string, data: DataExchange): void {
    this.expect("advertise_keys", client, this.options.clients);
    const bytes = this.answerOf("advertise_keys", data);
    refuseExtra(bytes, new Set([TENSORS.encryptionKey, TENSORS.maskKey]));
    const keys = { encryptionKey: checkKeyBytes(`tensor ${TENSORS.encryptionKey}`, bytes.get(TENSORS.encryptionKey)), maskKey: checkKeyBytes(`tensor ${TENSORS.maskKey}`, bytes.get(TENSORS.maskKey)) };
    if (keys.encryptionKey.equals(keys.maskKey)) throw new ProtocolViolation("the encryption key and the mask key are the same");
    for (const [other, theirs] of this.keys) {
      if ([theirs.encryptionKey, theirs.maskKey].some((key) => key.equals(keys.encryptionKey) || key.equals(keys.maskKey))) throw new ProtocolViolation(`a key already advertised by ${other}`);
    }
    this.keys.set(client, keys);
  }

  /** Ends advertising: the clients with keys form the neighbour graph. */
  beginSharing(): string[] {
    this.advance("advertise_keys", "share_keys", this.keys.size, "advertised keys");
    this.graph = neighbourGraph([...this.keys.keys()].sort(), this.options.neighbours);
    return [...this.graph.keys()];
  }

  shareKeysTask(client: string): DataExchange {
    const neighbours = [client, ...this.graph.get(client)!].sort();
    return protocolMessage(
      { phase: "share_keys", round: this.options.round, threshold: this.threshold, neighbours },
      neighbours.flatMap((peer) => [
        [TENSORS.encryptionKeyOf(peer), this.keys.get(peer)!.encryptionKey],
        [TENSORS.maskKeyOf(peer), this.keys.get(peer)!.maskKey],
      ]),
    );
  }

  acceptShares(client: string, data: DataExchange): void {
    this.expect("share_keys", client, this.graph.keys());
    const bytes = this.answerOf("share_keys", data);
    const neighbours = this.graph.get(client)!;
    refuseExtra(bytes, new Set([TENSORS.seedCommitment, ...neighbours.map(TENSORS.sealedShares)]));
    const commitment = bytes.get(TENSORS.seedCommitment);
    if (commitment?.length !== 32) throw new ProtocolViolation(`tensor ${TENSORS.seedCommitment}: ${commitment ? `${commitment.length} bytes` : "missing"}, a SHA-256 has 32`);
    const sealed = neighbours.map((peer) => {
      const shares = bytes.get(TENSORS.sealedShares(peer));
      if (shares?.length !== SEALED_SHARES_BYTES) throw new ProtocolViolation(`tensor ${TENSORS.sealedShares(peer)}: ${shares ? `${shares.length} bytes` : "missing"}, sealed shares have ${SEALED_SHARES_BYTES}`);
      return [peer, Buffer.from(shares)] as const;
    });
    for (const [peer, shares] of sealed) {
      if (!this.mailboxes.has(peer)) this.mailboxes.set(peer, new Map());
      this.mailboxes.get(peer)!.set(client, shares);
    }
    this.commitments.set(client, Buffer.from(commitment));
  }

  /** Ends sharing: the clients that shared are the round's participants, asked for masked results. */
  beginMasking(): string[] {
    this.advance("share_keys", "masked_input", this.commitments.size, "shared keys");
    this.quantization = new Quantization(this.options.clipRange, this.commitments.size);
    return this.participants();
  }

  /**
   * The protocol's part of the training task, the same for every participant
   * (so the model is encoded once for all): the participants, and the
   * quantization every one of them uses. The task's data is `data` with this
   * added to its meta.
   */
  maskedInputTask(data: DataExchange): DataExchange {
    const meta = { phase: "masked_input", round: this.options.round, clip_range: this.options.clipRange, contributors: this.quantization!.contributors, participants: this.participants() };
    return { ...data, meta: { ...data.meta, [SECAGG_META]: meta } };
  }

  /** Folds a masked result into the sum; `template` (the global model, when there is one) fixes the layout every result must have. */
  acceptMaskedInput(client: string, result: MaskedResult, template?: readonly Tensor[]): void {
    this.expect("masked_input", client, this.commitments.keys());
    if (this.contributed.has(client)) throw new ProtocolViolation(`a masked result from ${client} was already added`);
    // As FedAvg: an unspecified kind is taken for WEIGHTS.
    const kind = result.kind === DataKind.DATA_KIND_UNSPECIFIED ? DataKind.DATA_KIND_WEIGHTS : result.kind;
    if (kind !== DataKind.DATA_KIND_WEIGHTS && kind !== DataKind.DATA_KIND_WEIGHT_DIFF) throw new ProtocolViolation(`sent ${DataKind[kind]}, expected WEIGHTS or WEIGHT_DIFF`);
    if (this.kind !== undefined && kind !== this.kind) throw new ProtocolViolation(`sent ${DataKind[kind]}, the round's other results are ${DataKind[this.kind]}: a sum cannot mix them`);
    const tensors = result.staged?.tensors ?? result.tensors ?? [];
    if (tensors.length === 0) throw new ProtocolViolation("sent no tensors");
    const sum = this.sum ?? new ModularSum(template ?? tensors);
    if (result.staged) sum.addStaged(result.staged);
    else sum.add(result.tensors!);
    this.sum = sum;
    this.kind = kind;
    this.contributed.add(client);
  }

  /** Ends masking: the clients whose results are in the sum are the survivors, the other participants dropped out. */
  beginUnmasking(): string[] {
    this.advance("masked_input", "unmask", this.contributed.size, "masked results");
    this.survivors = [...this.contributed].sort();
    this.dropped = this.participants().filter((client) => !this.contributed.has(client));
    return this.survivors;
  }

  /** The unmasking task of a survivor: who survived and who dropped among its neighbours, and the shares they sealed for it. */
  unmaskTask(client: string): DataExchange {
    const neighbourhood = new Set([client, ...this.graph.get(client)!]);
    const mailbox = this.mailboxes.get(client) ?? new Map<string, Buffer>();
    const survivors = this.survivors.filter((peer) => neighbourhood.has(peer));
    const dropped = this.dropped.filter((peer) => neighbourhood.has(peer));
    const routed = [...survivors, ...dropped].filter((peer) => peer !== client && mailbox.has(peer)).map((peer): [string, Uint8Array] => [TENSORS.sealedShares(peer), mailbox.get(peer)!]);
    return protocolMessage({ phase: "unmask", round: this.options.round, survivors, dropped }, routed);
  }

  acceptUnmaskShares(client: string, data: DataExchange): void {
    this.expect("unmask", client, this.survivors);
    if (this.unmasked.has(client)) throw new ProtocolViolation(`unmasking shares from ${client} were already taken`);
    const bytes = this.answerOf("unmask", data);
    const neighbourhood = new Set([client, ...this.graph.get(client)!]);
    const survivors = this.survivors.filter((peer) => neighbourhood.has(peer));
    const dropped = this.dropped.filter((peer) => neighbourhood.has(peer));
    refuseExtra(bytes, new Set([...survivors.map(TENSORS.seedShare), ...dropped.map(TENSORS.privateKeyShare)]));
    // Check every share before keeping any: a refused answer leaves nothing behind.
    const seeds = survivors.flatMap((owner) => (bytes.has(TENSORS.seedShare(owner)) ? [[owner, checkShare(`tensor ${TENSORS.seedShare(owner)}`, bytes.get(TENSORS.seedShare(owner)))] as const] : []));
    const keys = dropped.flatMap((owner) => (bytes.has(TENSORS.privateKeyShare(owner)) ? [[owner, checkShare(`tensor ${TENSORS.privateKeyShare(owner)}`, bytes.get(TENSORS.privateKeyShare(owner)))] as const] : []));
    for (const [owner, share] of seeds) this.seedShares.set(owner, [...(this.seedShares.get(owner) ?? []), share]);
    for (const [owner, share] of keys) this.privateKeyShares.set(owner, [...(this.privateKeyShares.get(owner) ?? []), share]);
    this.unmasked.add(client);
  }

  /** The mean of the survivors' results (still a difference for WEIGHT_DIFF: see `kind`), the masks taken out. */
  async finish(): Promise<{ mean: Tensor[]; kind: DataKind; survivors: string[]; dropped: string[] }> {
    this.advance("unmask", "done", this.unmasked.size, "unmasking answers");
    const clients = new Map<string, ClientRecord>(
      [...this.commitments.keys()].map((client) => [client, { maskKey: this.keys.get(client)!.maskKey, seedCommitment: this.commitments.get(client)!, neighbours: this.graph.get(client)! }]),
    );
    const mean = await unmaskMean({
      context: this.context,
      threshold: this.threshold,
      clients,
      survivors: this.survivors,
      dropped: this.dropped,
      seedShares: this.seedShares,
      privateKeyShares: this.privateKeyShares,
      sum: this.sum!.tensors,
      quantization: this.quantization!,
    });
    return { mean, kind: this.kind!, survivors: this.survivors, dropped: this.dropped };
  }

  /** The precision of the round's mean: half a quantization level. */
  get precision(): number | undefined {
    return this.quantization && this.quantization.step / 2;
  }

  private participants(): string[] {
    return [...this.commitments.keys()].sort();
  }

  private answerOf(phase: Phase, data: DataExchange): Map<string, Buffer> {
    const meta = answerOf(data);
    if (meta.phase !== phase || meta.round !== this.options.round) throw new ProtocolViolation(`meta.${SECAGG_META}: expected the answer of ${phase} in round ${this.options.round}`);
    return bytesByName(data);
  }

  private expect(phase: Phase, client: string, allowed: Iterable<string>): void {
    if (this.phase !== phase) throw new ProtocolViolation(`the round is in ${this.phase}, not ${phase}`);
    if (![...allowed].includes(client)) throw new ProtocolViolation(`${client} is not asked for ${phase} in this round`);
  }

  private advance(from: Phase, to: Phase, answered: number, what: string): void {
    if (this.phase !== from) throw new Error(`the round is in ${this.phase}, not ${from}`);
    if (answered < this.threshold) throw new RoundUnrecoverable(`${answered} ${what}, the threshold is ${this.threshold}`);
    this.phase = to;
  }
}
