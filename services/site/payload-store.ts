import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Payload } from "../../gen/campfire/agent/v1/agent_service.js";
import { type DataExchange, type EncodedPieces, piecesIfLarge } from "../shared/payload.js";
import { PermissionDenied } from "../security/errors.js";
import { PayloadNotFound } from "./errors.js";
import { SpareFiles } from "./uploads/spare-files.js";
import type { StagedResult } from "./uploads/staged-result.js";
import { UploadSpool } from "./uploads/upload-spool.js";

/**
 * Default budget of uploads in flight or staged. Uploads are staged on disk,
 * not in memory (see uploads/README.md): an upload in flight holds a few
 * chunks of memory whatever its size, so the budget bounds the disk they take
 * and lets a round's uploads run side by side (3 x 1 GiB fit: at 1 GiB, a
 * budget of 1 GiB made a round's uploads wait for each other); an upload
 * larger than it is admitted alone.
 */
export const DEFAULT_UPLOAD_BUDGET_BYTES = 4 * 1024 * 1024 * 1024;

type Entry =
  /** Task data's encoding in pieces that view its tensors (see share()), and the clients a task referencing it was sent to, the only ones who may download it. */
  | { encoded: EncodedPieces; readers?: Set<string>; staged?: undefined; ownerAgentId?: undefined }
  /** An upload, staged on disk, and the agent that uploaded it (for cleanup when that agent leaves). */
  | { staged: StagedResult; ownerAgentId: string; encoded?: undefined };

/**
 * Payloads too large for the control stream, by id: task data waiting to be
 * downloaded by agents (in memory, one encoding shared by every agent it is
 * sent to), and results uploaded by agents waiting to be consumed (staged in
 * files of `uploadDir`, one per upload).
 */
export class PayloadStore {
  private readonly entries = new Map<string, Entry>();
  private uploadDirectory: string | undefined;
  /** Staging files kept for the next uploads to overwrite (uploads/spare-files.ts), within what the upload budget leaves. */
  private spares: SpareFiles | undefined;
  /** Bytes of uploads being received or held until their result is consumed. */
  private uploadBytes = 0;
  private readonly uploadWaiters: Array<{ bytes: number; admit(): void }> = [];

  /**
   * @param uploadBudgetBytes how many bytes of uploads may be in flight or held
   * at once. Past it, further uploads wait (their streams are not read, so flow
   * control holds the agents back) until results are consumed: the site's memory
   * then grows with the model, not with clients x model.
   */
  constructor(
    readonly uploadBudgetBytes = DEFAULT_UPLOAD_BUDGET_BYTES,
    private readonly uploadDir?: string,
  ) {}

  /** Starts staging an upload of `size` bytes (reserved with reserveUpload) in a file of its own. */
  spool(size: number): UploadSpool {
    if (!this.uploadDirectory) {
      // Files left by a site that stopped without cleaning up are orphans: no result names them any more.
      if (this.uploadDir) rmSync(this.uploadDir, { recursive: true, force: true });
      this.uploadDirectory = this.uploadDir ? (mkdirSync(this.uploadDir, { recursive: true }), this.uploadDir) : mkdtempSync(join(tmpdir(), "campfire-uploads-"));
      this.spares = new SpareFiles(this.uploadDirectory, () => this.uploadBudgetBytes - this.uploadBytes);
    }
    return new UploadSpool(this.uploadDirectory, size, this.spares);
  }

  /** Drops every staged upload and their folder (the site is stopping). */
  close(): void {
    for (const [id, entry] of this.entries) if (entry.staged) this.removeUpload(id, entry.ownerAgentId);
    this.spares?.close();
    this.spares = undefined;
    if (this.uploadDirectory) rmSync(this.uploadDirectory, { recursive: true, force: true });
    this.uploadDirectory = undefined;
  }

  /**
   * Waits until an upload of `bytes` fits the budget (one upload larger than the
   * whole budget is admitted when nothing else is held). Rejects when `signal` fires.
   */
  async reserveUpload(bytes: number, signal: AbortSignal): Promise<void> {
    if (this.fits(bytes) && this.uploadWaiters.length === 0) {
      this.admit(bytes);
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
      this.admit(waiter.bytes);
      waiter.admit();
    }
  }

  /** Counts an admitted upload, and drops spare files past what the budget leaves beside the uploads. */
  private admit(bytes: number): void {
    this.uploadBytes += bytes;
    this.spares?.shrinkTo(Math.max(0, this.uploadBudgetBytes - this.uploadBytes));
  }

  private fits(bytes: number): boolean {
    return this.uploadBytes === 0 || this.uploadBytes + bytes <= this.uploadBudgetBytes;
  }

  /** Stores a staged upload (reserved with reserveUpload); released by take() or when the owner leaves. */
  putUpload(ownerAgentId: string, staged: StagedResult): string {
    const id = randomUUID();
    this.entries.set(id, { staged, ownerAgentId });
    return id;
  }

  /** Lets `clientName` download task payload `id` (a task referencing it goes to that client). */
  allow(id: string, clientName: string): void {
    const entry = this.entries.get(id);
    if (entry?.encoded) (entry.readers ??= new Set()).add(clientName);
  }

  /**
   * The encoding for a download, without removing it. With `reader` (a
   * client whose identity TLS proved), only a payload of a task sent to that
   * client is given; uploads are never downloaded.
   */
  get(id: string, reader?: string): EncodedPieces {
    const entry = this.entries.get(id);
    if (!entry?.encoded) throw new PayloadNotFound(`payload ${JSON.stringify(id)} is not held by this site`);
    if (reader !== undefined && !entry.readers?.has(reader)) {
      throw new PermissionDenied(`client ${reader} may not download payload ${JSON.stringify(id)}: download is allowed only for the data of tasks sent to that client`);
    }
    return entry.encoded;
  }

  /** Removes and returns an uploaded payload: a result is consumed once. The caller releases it (or loads it). */
  take(id: string, agentId: string): StagedResult {
    const staged = this.removeUpload(id, agentId, false);
    if (!staged) throw new PayloadNotFound(`payload ${JSON.stringify(id)} was not uploaded by agent ${agentId} (or was already used)`);
    return staged;
  }

  /** Drops an upload named by a result the site does not use; unknown ids are ignored. */
  discard(id: string, agentId: string): void {
    this.removeUpload(id, agentId);
  }

  /** Drops what an agent uploaded but never referenced in a result. */
  releaseUploadsOf(agentId: string): void {
    for (const [id, entry] of this.entries) if (entry.ownerAgentId === agentId) this.removeUpload(id, agentId);
  }

  private removeUpload(id: string, agentId: string, drop = true): StagedResult | undefined {
    const entry = this.entries.get(id);
    if (!entry?.staged || entry.ownerAgentId !== agentId) return undefined;
    this.entries.delete(id);
    this.releaseUpload(entry.staged.size);
    if (drop) entry.staged.release();
    return entry.staged;
  }

  /**
   * Prepares task data once for any number of tasks: inline when small, otherwise
   * held for download. Call release() when no task needs it any more. Large
   * tensors are not copied (downloads read their bytes where they are, so the
   * site holds a model once, not twice): leave them unchanged until release().
   */
  share(data: DataExchange): SharedPayload {
    const encoded = piecesIfLarge(data);
    if (!encoded) return new SharedPayload({ body: { $case: "inline", value: data } }, () => {}, data);
    const id = randomUUID();
    this.entries.set(id, { encoded });
    return new SharedPayload({ body: { $case: "ref", value: { payloadId: id, sizeBytes: encoded.size } } }, () => this.entries.delete(id), data);
  }

  /** Bytes of uploads being received or held: never more than the budget, or one upload larger than it. */
  get reservedUploadBytes(): number {
    return this.uploadBytes;
  }

  get heldBytes(): number {
    let total = 0;
    for (const entry of this.entries.values()) total += entry.encoded ? entry.encoded.size : entry.staged.size;
    return total;
  }
}

/** Task data prepared once by PayloadStore.share(), sendable to many agents. */
export class SharedPayload {
  constructor(
    readonly payload: Payload,
    private readonly onRelease: () => void,
    /** The data as the workflow gave it (the base a site result filter measures a WEIGHTS result's update from). */
    readonly data: DataExchange,
  ) {}

  release(): void {
    this.onRelease();
  }
}
