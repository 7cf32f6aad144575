import { randomUUID } from "node:crypto";
import type { Payload } from "../../gen/campfire/agent/v1/agent_service.js";
import { type DataExchange, type EncodedPieces, piecesIfLarge } from "../shared/payload.js";
import { PermissionDenied } from "../security/errors.js";
import { PayloadNotFound } from "./errors.js";

/**
 * Default in-flight upload budget. An encoded 64 MiB model is a few bytes over
 * 64 MiB, so one such result is assembled at a time (an upload larger than the
 * budget is admitted alone); the site's round peak stays near 3 models.
 */
export const DEFAULT_UPLOAD_BUDGET_BYTES = 128 * 1024 * 1024;

interface Entry {
  /** An upload's bytes (one piece), or task data's encoding in pieces that view its tensors (see share()). */
  encoded: EncodedPieces;
  /** The agent that uploaded it, for cleanup when that agent leaves; undefined for task payloads. */
  ownerAgentId: string | undefined;
  /** Task payloads: the clients a task referencing it was sent to, the only ones who may download it. */
  readers?: Set<string>;
}

/**
 * Payloads too large for the control stream, held in memory by id: task data
 * waiting to be downloaded by agents, and results uploaded by agents waiting to
 * be consumed. One task payload is shared by every agent it is sent to.
 */
export class PayloadStore {
  private readonly entries = new Map<string, Entry>();
  /** Bytes of uploads being received or held until their result is consumed. */
  private uploadBytes = 0;
  private readonly uploadWaiters: Array<{ bytes: number; admit(): void }> = [];

  /**
   * @param uploadBudgetBytes how many bytes of uploads may be in flight or held
   * at once. Past it, further uploads wait (their streams are not read, so flow
   * control holds the agents back) until results are consumed: the site's memory
   * then grows with the model, not with clients x model.
   */
  constructor(readonly uploadBudgetBytes = DEFAULT_UPLOAD_BUDGET_BYTES) {}

  /**
   * Waits until an upload of `bytes` fits the budget (one upload larger than the
   * whole budget is admitted when nothing else is held). Rejects when `signal` fires.
   */
  async reserveUpload(bytes: number, signal: AbortSignal): Promise<void> {
    if (this.fits(bytes) && this.uploadWaiters.length === 0) {
      this.uploadBytes += bytes;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const waiter = {
        bytes,
        admit: () => {
          signal.removeEventListener("abort", abandon);
          resolve();
        },
      };
      const abandon = () => {
        this.uploadWaiters.splice(this.uploadWaiters.indexOf(waiter), 1);
        reject(signal.reason);
      };
      signal.addEventListener("abort", abandon, { once: true });
      this.uploadWaiters.push(waiter);
    });
  }

  /** Gives back a reservation whose upload failed or was abandoned. */
  releaseUpload(bytes: number): void {
    this.uploadBytes -= bytes;
    while (this.uploadWaiters.length && this.fits(this.uploadWaiters[0]!.bytes)) {
      const waiter = this.uploadWaiters.shift()!;
      this.uploadBytes += waiter.bytes;
      waiter.admit();
    }
  }

  private fits(bytes: number): boolean {
    return this.uploadBytes === 0 || this.uploadBytes + bytes <= this.uploadBudgetBytes;
  }

  /** Stores uploaded bytes (reserved with reserveUpload); released by take() or when the owner leaves. */
  putUpload(ownerAgentId: string, bytes: Buffer): string {
    const id = randomUUID();
    this.entries.set(id, { encoded: { size: bytes.length, pieces: [bytes] }, ownerAgentId });
    return id;
  }

  /** Lets `clientName` download task payload `id` (a task referencing it goes to that client). */
  allow(id: string, clientName: string): void {
    const entry = this.entries.get(id);
    if (entry && !entry.ownerAgentId) (entry.readers ??= new Set()).add(clientName);
  }

  /**
   * The encoding for a download, without removing it. With `reader` (a
   * client whose identity TLS proved), only a payload of a task sent to that
   * client is given; uploads are never downloaded.
   */
  get(id: string, reader?: string): EncodedPieces {
    const entry = this.entries.get(id);
    if (!entry) throw new PayloadNotFound(`payload ${JSON.stringify(id)} is not held by this site`);
    if (reader !== undefined && !entry.readers?.has(reader)) {
      throw new PermissionDenied(`client ${reader} may not download payload ${JSON.stringify(id)}: download is allowed only for the data of tasks sent to that client`);
    }
    return entry.encoded;
  }

  /** Removes and returns an uploaded payload: a result is consumed once. */
  take(id: string, agentId: string): Buffer {
    const bytes = this.removeUpload(id, agentId);
    if (!bytes) throw new PayloadNotFound(`payload ${JSON.stringify(id)} was not uploaded by agent ${agentId} (or was already used)`);
    return bytes;
  }

  /** Drops an upload named by a result the site does not use; unknown ids are ignored. */
  discard(id: string, agentId: string): void {
    this.removeUpload(id, agentId);
  }

  /** Drops what an agent uploaded but never referenced in a result. */
  releaseUploadsOf(agentId: string): void {
    for (const [id, entry] of this.entries) if (entry.ownerAgentId === agentId) this.removeUpload(id, agentId);
  }

  private removeUpload(id: string, agentId: string): Buffer | undefined {
    const entry = this.entries.get(id);
    if (!entry || entry.ownerAgentId !== agentId) return undefined;
    this.entries.delete(id);
    this.releaseUpload(entry.encoded.size);
    return entry.encoded.pieces[0] as Buffer;
  }

  /**
   * Prepares task data once for any number of tasks: inline when small, otherwise
   * held for download. Call release() when no task needs it any more. Large
   * tensors are not copied (downloads read their bytes where they are, so the
   * site holds a model once, not twice): leave them unchanged until release().
   */
  share(data: DataExchange): SharedPayload {
    const encoded = piecesIfLarge(data);
    if (!encoded) return new SharedPayload({ body: { $case: "inline", value: data } }, () => {});
    const id = randomUUID();
    this.entries.set(id, { encoded, ownerAgentId: undefined });
    return new SharedPayload({ body: { $case: "ref", value: { payloadId: id, sizeBytes: encoded.size } } }, () => this.entries.delete(id));
  }

  /** Bytes of uploads being received or held: never more than the budget, or one upload larger than it. */
  get reservedUploadBytes(): number {
    return this.uploadBytes;
  }

  get heldBytes(): number {
    let total = 0;
    for (const entry of this.entries.values()) total += entry.encoded.size;
    return total;
  }
}

/** Task data prepared once by PayloadStore.share(), sendable to many agents. */
export class SharedPayload {
  constructor(
    readonly payload: Payload,
    private readonly onRelease: () => void,
  ) {}

  release(): void {
    this.onRelease();
  }
}
