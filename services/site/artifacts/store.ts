import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { type FileHandle, mkdir, open, readdir, rename, rm, stat, statfs } from "node:fs/promises";
import { join } from "node:path";
import { syncDir, writeFileAtomic } from "../../shared/durable-file.js";
import type { Logger } from "../../shared/logger.js";
import { ArtifactTooLarge, InvalidUpload, TooManyUploads, UploadOffsetMismatch, UploadSuperseded } from "./errors.js";

/**
 * A file the site holds once, by content: what workflows read an initial
 * model from. `path` is never written again (artifacts are immutable).
 */
export interface StoredArtifact {
  path: string;
  /** Lower-case hex SHA-256 of the file's bytes. */
  sha256: string;
  size: number;
}

export type ArtifactStatus =
  | { state: "absent" }
  | { state: "partial"; received: number; size: number }
  | { state: "complete"; artifact: StoredArtifact };

export interface ArtifactStoreOptions {
  /** The largest artifact accepted. Default 64 GiB. */
  maxArtifactBytes?: number;
  /** Uploads in progress at once, site-wide. Default 8. */
  maxConcurrentUploads?: number;
  /** Free disk space kept beyond an upload's remaining bytes. Default 64 MiB. */
  diskReserveBytes?: number;
}

export const DEFAULT_MAX_ARTIFACT_BYTES = 64 * 1024 ** 3;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const COMPLETE_DIR = "sha256";
/** Uploads in progress or interrupted: "<sha256>-<owner key>-<size>". */
const PARTIAL_DIR = ".partial";

/** Why `value` is not a lower-case hex SHA-256, or undefined. */
export function sha256Problem(value: string): string | undefined {
  return SHA256_HEX.test(value) ? undefined : `${JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value)} is not a lower-case hex SHA-256 (64 characters 0-9a-f)`;
}

/**
 * Job artifacts on the site's disk, content-addressed:
 *   <dir>/sha256/<hex>                        complete, checked, immutable
 *   <dir>/.partial/<hex>-<owner>-<size>       an upload in progress or interrupted, per caller
 * A partial upload belongs to its caller (owner), so that one admin's
 * half-written bytes never mix with another's; a complete artifact is
 * shared by every job that names its digest. Interrupted uploads survive a
 * site restart and resume where they stopped.
 */
export class ArtifactStore {
  private readonly active = new Map<string, ArtifactUpload>();
  private readonly maxArtifactBytes: number;
  private readonly maxConcurrentUploads: number;
  private readonly diskReserveBytes: number;

  private constructor(
    readonly dir: string,
    private readonly logger: Logger,
    options: ArtifactStoreOptions,
  ) {
    this.maxArtifactBytes = options.maxArtifactBytes ?? DEFAULT_MAX_ARTIFACT_BYTES;
    this.maxConcurrentUploads = options.maxConcurrentUploads ?? 8;
    this.diskReserveBytes = options.diskReserveBytes ?? 64 * 1024 * 1024;
  }

  static async open(dir: string, logger: Logger, options: ArtifactStoreOptions = {}): Promise<ArtifactStore> {
    await mkdir(join(dir, COMPLETE_DIR), { recursive: true });
    await mkdir(join(dir, PARTIAL_DIR), { recursive: true });
    return new ArtifactStore(dir, logger, options);
  }

  /** The complete artifact with this digest, or undefined. */
  async stored(sha256: string): Promise<StoredArtifact | undefined> {
    const path = join(this.dir, COMPLETE_DIR, sha256);
    try {
      return { path, sha256, size: (await stat(path)).size };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw error;
    }
  }

  /** How much of the artifact the site holds for `owner` (a partial upload is the owner's alone). */
  async status(sha256: string, owner: string): Promise<ArtifactStatus> {
    const artifact = await this.stored(sha256);
    if (artifact) return { state: "complete", artifact };
    const partial = await this.findPartial(sha256, owner);
    return partial ? { state: "partial", received: partial.received, size: partial.size } : { state: "absent" };
  }

  /** Stores small bytes (an inline app file) as an artifact, once. */
  async putBytes(bytes: Uint8Array): Promise<StoredArtifact> {
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    const existing = await this.stored(sha256);
    if (existing) return existing;
    const path = join(this.dir, COMPLETE_DIR, sha256);
    await writeFileAtomic(path, bytes);
    return { path, sha256, size: bytes.length };
  }

  /**
   * Starts (offset 0) or resumes (offset = what the owner's partial upload
   * holds) an upload. A newer upload of the same artifact by the same owner
   * supersedes one still in progress. Resolves with the upload, or with the
   * stored artifact when the site already holds it complete.
   */
  async begin(header: { sha256: string; sizeBytes: number; offset: number }, owner: string): Promise<ArtifactUpload | StoredArtifact> {
    const { sha256, sizeBytes: size, offset } = header;
    const problem = sha256Problem(sha256);
    if (problem) throw new InvalidUpload(`header.sha256: ${problem}`);
    if (!Number.isSafeInteger(size) || size < 1) throw new InvalidUpload(`header.size_bytes: ${size} must be at least 1`);
    if (size > this.maxArtifactBytes) {
      throw new ArtifactTooLarge(`header.size_bytes: ${size} bytes is more than this site accepts per artifact (${this.maxArtifactBytes}, campfire site --max-artifact-gb)`);
    }
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > size) throw new InvalidUpload(`header.offset: ${offset} must be between 0 and size_bytes ${size}`);
    const complete = await this.stored(sha256);
    if (complete) {
      if (complete.size !== size) throw new InvalidUpload(`header.size_bytes: ${size}, but the artifact ${sha256} the site holds has ${complete.size} bytes`);
      return complete;
    }
    const key = `${sha256}-${ownerKey(owner)}`;
    const previous = this.active.get(key);
    if (previous) {
      previous.supersede();
      await previous.closed;
    } else if (this.active.size >= this.maxConcurrentUploads) {
      throw new TooManyUploads(`${this.active.size} artifact uploads are in progress, as many as this site takes at once; retry shortly`);
    }
    const partial = await this.findPartial(sha256, owner);
    // Resuming below what is held is fine (the bytes past the offset are dropped): a status read while the previous upload still wrote says less than the file ends up with.
    if (offset > 0 && (!partial || partial.size !== size || partial.received < offset)) {
      const held = partial && partial.size === size ? partial.received : 0;
      throw new UploadOffsetMismatch(`header.offset: ${offset}, but the site holds ${held} bytes of artifact ${sha256}; resume from offset ${held} (GetArtifactStatus tells)`);
    }
    await this.ensureRoom(size - offset);
    if (partial && (offset === 0 || partial.size !== size)) await rm(partial.path, { force: true });
    const path = join(this.dir, PARTIAL_DIR, `${key}-${size}`);
    const handle = await open(path, offset > 0 ? "r+" : "w");
    const hash = createHash("sha256");
    try {
      if (offset > 0) {
        await handle.truncate(offset);
        await hashFile(path, hash);
      }
    } catch (error) {
      await handle.close();
      throw error;
    }
    const upload = new ArtifactUpload(this, key, path, join(this.dir, COMPLETE_DIR, sha256), sha256, size, offset, hash, handle);
    this.active.set(key, upload);
    return upload;
  }

  /** @internal the upload ended (stored, failed or abandoned). */
  ended(upload: ArtifactUpload): void {
    if (this.active.get(upload.key) === upload) this.active.delete(upload.key);
  }

  /** @internal */
  get log(): Logger {
    return this.logger;
  }

  private async findPartial(sha256: string, owner: string): Promise<{ path: string; received: number; size: number } | undefined> {
    const prefix = `${sha256}-${ownerKey(owner)}-`;
    const name = (await readdir(join(this.dir, PARTIAL_DIR))).find((entry) => entry.startsWith(prefix));
    if (!name) return undefined;
    const path = join(this.dir, PARTIAL_DIR, name);
    return { path, received: (await stat(path)).size, size: Number(name.slice(prefix.length)) };
  }

  private async ensureRoom(bytes: number): Promise<void> {
    const { bavail, bsize } = await statfs(this.dir);
    const free = bavail * bsize;
    if (free < bytes + this.diskReserveBytes) {
      throw new ArtifactTooLarge(`header.size_bytes: ${bytes} more bytes do not fit on the site's disk (${free} bytes free, ${this.diskReserveBytes} kept in reserve); ask its operator for room`);
    }
  }
}

/** One upload in progress: bytes are hashed and written as they come; finish() checks and stores them. */
export class ArtifactUpload {
  private readonly controller = new AbortController();
  private closedResolve!: () => void;
  /** Resolves once the upload's file is closed, however it ended. */
  readonly closed = new Promise<void>((resolve) => (this.closedResolve = resolve));
  private ended = false;

  constructor(
    private readonly store: ArtifactStore,
    readonly key: string,
    private readonly partialPath: string,
    private readonly completePath: string,
    readonly sha256: string,
    readonly size: number,
    private received: number,
    private readonly hash: Hash,
    private readonly handle: FileHandle,
  ) {}

  /** Fires when a newer upload of the same artifact by the same caller takes over. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get receivedBytes(): number {
    return this.received;
  }

  /** Appends the next bytes. */
  async write(chunk: Uint8Array): Promise<void> {
    this.controller.signal.throwIfAborted();
    if (this.received + chunk.length > this.size) {
      throw new InvalidUpload(`chunk: ${chunk.length} bytes at offset ${this.received} would take artifact ${this.sha256} past its size_bytes ${this.size}`);
    }
    this.hash.update(chunk);
    await this.handle.write(chunk, 0, chunk.length, this.received);
    this.received += chunk.length;
  }

  /**
   * Checks that all bytes came and hash to the digest, then stores the
   * artifact durably. A wrong digest discards the partial upload (its
   * bytes are worthless: a resume would end the same way).
   */
  async finish(): Promise<StoredArtifact> {
    this.controller.signal.throwIfAborted();
    if (this.received !== this.size) {
      throw new InvalidUpload(`the upload ended after ${this.received} of its ${this.size} bytes; resume it from offset ${this.received}`);
    }
    const actual = this.hash.digest("hex");
    if (actual !== this.sha256) {
      await this.close();
      await rm(this.partialPath, { force: true });
      throw new InvalidUpload(`header.sha256: the ${this.size} bytes received hash to ${actual}, not ${this.sha256}; the upload is discarded, upload the file again`);
    }
    await this.handle.sync();
    await this.close();
    await rename(this.partialPath, this.completePath);
    await syncDir(join(this.completePath, ".."));
    this.store.log.info({ artifact: this.sha256, bytes: this.size }, "artifact stored");
    return { path: this.completePath, sha256: this.sha256, size: this.size };
  }

  /** Ends an upload that did not finish; its bytes stay for a resume. */
  abandon(): Promise<void> {
    return this.close();
  }

  /** @internal */
  supersede(): void {
    this.controller.abort(new UploadSuperseded(`a newer upload of artifact ${this.sha256} by the same caller took over`));
  }

  private async close(): Promise<void> {
    if (this.ended) return this.closed;
    this.ended = true;
    try {
      await this.handle.close();
    } finally {
      this.store.ended(this);
      this.closedResolve();
    }
  }
}

/** A short, file-name-safe key for a caller's name. */
function ownerKey(owner: string): string {
  return createHash("sha256").update(owner).digest("hex").slice(0, 16);
}

/** Feeds a file's bytes to `hash` (a resumed upload's digest starts from the bytes already held). */
export async function hashFile(path: string, hash: Hash): Promise<void> {
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
}
