import { randomUUID } from "node:crypto";
import type { Payload } from "../../gen/campfire/agent/v1/agent_service.js";
import { type DataExchange, encodingIfLarge } from "../shared/payload.js";
import { PayloadNotFound } from "./errors.js";

interface Entry {
  bytes: Buffer;
  /** The agent that uploaded it, for cleanup when that agent leaves; undefined for task payloads. */
  ownerAgentId: string | undefined;
}

/**
 * Payloads too large for the control stream, held in memory by id: task data
 * waiting to be downloaded by agents, and results uploaded by agents waiting to
 * be consumed. One task payload is shared by every agent it is sent to.
 */
export class PayloadStore {
  private readonly entries = new Map<string, Entry>();

  /** Stores uploaded bytes; they are released by take() or when the owner leaves. */
  putUpload(ownerAgentId: string, bytes: Buffer): string {
    const id = randomUUID();
    this.entries.set(id, { bytes, ownerAgentId });
    return id;
  }

  /** The bytes for a download, without removing them. */
  get(id: string): Buffer {
    const entry = this.entries.get(id);
    if (!entry) throw new PayloadNotFound(`payload ${JSON.stringify(id)} is not held by this site`);
    return entry.bytes;
  }

  /** Removes and returns an uploaded payload: a result is consumed once. */
  take(id: string, agentId: string): Buffer {
    const entry = this.entries.get(id);
    if (!entry || entry.ownerAgentId !== agentId) {
      throw new PayloadNotFound(`payload ${JSON.stringify(id)} was not uploaded by agent ${agentId} (or was already used)`);
    }
    this.entries.delete(id);
    return entry.bytes;
  }

  /** Drops what an agent uploaded but never referenced in a result. */
  releaseUploadsOf(agentId: string): void {
    for (const [id, entry] of this.entries) if (entry.ownerAgentId === agentId) this.entries.delete(id);
  }

  /**
   * Prepares task data once for any number of tasks: inline when small, otherwise
   * stored for download. Call release() when no task needs it any more.
   */
  share(data: DataExchange): SharedPayload {
    const bytes = encodingIfLarge(data);
    if (!bytes) return new SharedPayload({ body: { $case: "inline", value: data } }, () => {});
    const id = randomUUID();
    this.entries.set(id, { bytes, ownerAgentId: undefined });
    return new SharedPayload({ body: { $case: "ref", value: { payloadId: id, sizeBytes: bytes.length } } }, () => this.entries.delete(id));
  }

  get heldBytes(): number {
    let total = 0;
    for (const entry of this.entries.values()) total += entry.bytes.length;
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
