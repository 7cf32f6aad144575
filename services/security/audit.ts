import { mkdir, open, readFile, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import type { Identity } from "./identity.js";

/** The audit log's file under the site's data directory. */
export const AUDIT_FILE = "audit.jsonl";

export type AuditOutcome = "allowed" | "denied" | "failed";

/** One line of the audit log. */
export interface AuditRecord {
  /** ISO time the site decided. */
  time: string;
  /** Who: the certificate's or token's name; "" when no identity could be established. */
  identity: string;
  org: string;
  /** The admin role, or "client" / "site" for other participants, "" when unknown. */
  role: string;
  /** How the identity was established: certificate, token, open (no authentication configured), none. */
  via: string;
  /** What was attempted: the RPC ("SubmitJob"), or an agent event ("agent.join", "agent.leave", "agent.upload", ...). */
  action: string;
  jobId?: string;
  outcome: AuditOutcome;
  /** Why it was denied or failed: the message the caller got. */
  reason?: string;
  /** The peer's address, as the transport saw it. */
  peer?: string;
  /** For agent events: the agent id. */
  agentId?: string;
  /** For artifact calls (UploadArtifact, GetArtifactStatus): the artifact's SHA-256, and for uploads the bytes received in the call. */
  artifact?: string;
  bytes?: number;
}

export type AuditEntry = Omit<AuditRecord, "time" | "identity" | "org" | "role" | "via"> & { identity: Identity | undefined };

/**
 * An append-only JSON-lines audit log. record() resolves once the line is
 * written to the file (the site answers the call after that), so a crash
 * after a reply never loses the line of the call it answered. Lines are
 * written in call order through one handle.
 */
export class AuditLog {
  private queue: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
  ) {}

  static async open(path: string): Promise<AuditLog> {
    await mkdir(dirname(path), { recursive: true });
    return new AuditLog(path, await open(path, "a", 0o600));
  }

  record(entry: AuditEntry): Promise<void> {
    if (this.closed) return Promise.resolve();
    const { identity, ...rest } = entry;
    const line: AuditRecord = {
      time: new Date().toISOString(),
      identity: identity?.name ?? "",
      org: identity?.org ?? "",
      role: identity ? (identity.role ?? identity.kind) : "",
      via: identity?.via ?? "none",
      ...rest,
    };
    const write = this.queue.then(() => this.handle.write(`${JSON.stringify(line)}\n`)).then(() => undefined);
    this.queue = write.catch(() => undefined);
    return write;
  }

  /** Resolves once every line recorded so far is written (or has failed to be): a reply sent after it follows its line. */
  flushed(): Promise<void> {
    return this.queue;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue;
    await this.handle.close();
  }
}

/** Reads an audit log back, oldest first; a torn last line (the site died mid-write) is skipped. */
export async function readAudit(path: string): Promise<AuditRecord[]> {
  const text = await readFile(path, "utf8");
  const records: AuditRecord[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      records.push(JSON.parse(line) as AuditRecord);
    } catch {
      // only the last line can be torn
    }
  }
  return records;
}

/** What `campfire audit` shows: every field given must match. */
export interface AuditFilter {
  identity?: string;
  /** An action, or a prefix ending in "." or "*": "agent." matches every agent event. */
  action?: string;
  outcome?: AuditOutcome;
  jobId?: string;
  /** Only lines at or after this time. */
  since?: Date;
  /** Only the newest N of what matched; 0 or undefined for all. */
  last?: number;
}

export function selectAudit(records: readonly AuditRecord[], filter: AuditFilter): AuditRecord[] {
  const action = filter.action;
  const actionMatches = (record: AuditRecord) =>
    !action || (action.endsWith("*") ? record.action.startsWith(action.slice(0, -1)) : action.endsWith(".") ? record.action.startsWith(action) : record.action === action);
  const since = filter.since?.getTime();
  const selected = records.filter(
    (record) =>
      (!filter.identity || record.identity === filter.identity) &&
      actionMatches(record) &&
      (!filter.outcome || record.outcome === filter.outcome) &&
      (!filter.jobId || record.jobId === filter.jobId) &&
      (since === undefined || Date.parse(record.time) >= since),
  );
  return filter.last ? selected.slice(-filter.last) : selected;
}
