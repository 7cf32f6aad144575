import { type Metadata, status as Status } from "@grpc/grpc-js";
import type { AuditEntry, AuditLog } from "../../security/audit.js";
import type { Authorizer, Right } from "../../security/authorization.js";
import { PermissionDenied, Unauthenticated } from "../../security/errors.js";
import type { Identity } from "../../security/identity.js";
import type { Peer } from "../../security/site-trust.js";
import type { Logger } from "../../shared/logger.js";
import type { JobManager } from "../jobs/manager.js";
import type { JobMeta } from "../jobs/model.js";
import { statusOf } from "../transport/grpc-status.js";
import { AdminCertificateRequired, type Authenticator } from "./auth.js";

/** What every admin call is checked against. */
export interface AdminGate {
  auth: Authenticator;
  authorizer: Authorizer;
  audit: AuditLog;
  jobs: JobManager;
  logger: Logger;
}

/**
 * One admin call's passage through the gate: who it is (authenticate), which
 * rights over which job it needs (require), and the one audit line that says
 * how it went, written before the reply (allowed / refused).
 */
export class AdminCall {
  private identity: Identity | undefined;
  private jobId: string | undefined;
  private artifact: { sha256: string; bytes?: number } | undefined;

  constructor(
    private readonly gate: AdminGate,
    readonly method: string,
    private readonly peer: Peer,
  ) {}

  /** The caller, from its token or certificate (see Authenticator). */
  authenticate(metadata: Metadata): Identity {
    try {
      this.identity = this.gate.auth.authenticate(metadata, this.peer);
    } catch (error) {
      if (error instanceof AdminCertificateRequired) this.identity = error.identity;
      throw error;
    }
    return this.identity;
  }

  get caller(): Identity {
    if (!this.identity) throw new Error(`${this.method}: authenticate() comes before the caller is known`);
    return this.identity;
  }

  /**
   * Throws PermissionDenied unless the caller holds `right`: over the job
   * `jobId` (its meta is returned, JobNotFound when there is none), or, without
   * one, over any job at all.
   */
  require(right: Right, jobId?: string): JobMeta | undefined {
    if (jobId === undefined) {
      this.gate.authorizer.require(this.caller, right);
      return undefined;
    }
    this.jobId = jobId;
    const meta = this.gate.jobs.meta(jobId);
    this.gate.authorizer.require(this.caller, right, meta);
    return meta;
  }

  /** Whether the caller holds `right` over `meta`'s job (for listings, which leave out what it may not see). */
  permits(right: Right, meta: JobMeta): boolean {
    return this.gate.authorizer.permits(this.caller, right, meta);
  }

  /** The job the call made (SubmitJob, CloneJob), for its audit line. */
  made(jobId: string): void {
    this.jobId = jobId;
  }

  /** The artifact the call is about (and, for an upload, the bytes it received), for its audit line. */
  concerns(artifact: { sha256: string; bytes?: number }): void {
    this.artifact = artifact;
  }

  /** Records that the call was carried out. */
  allowed(): Promise<void> {
    return this.record({ identity: this.identity, action: this.method, jobId: this.jobId, outcome: "allowed", peer: this.peer.address, ...this.artifactFields() });
  }

  /** Records, and logs with who and from where, that the call was denied (no identity, or no right) or failed. */
  refused(error: unknown): Promise<void> {
    const denied = error instanceof Unauthenticated || error instanceof PermissionDenied;
    const reason = error instanceof Error ? error.message : String(error);
    const fields = {
      method: this.method,
      caller: this.identity?.name,
      org: this.identity?.org || undefined,
      role: this.identity?.role,
      job: this.jobId,
      artifact: this.artifact?.sha256,
      peer: this.peer.address,
      err: error instanceof Error ? { type: error.name, message: error.message } : error,
    };
    if (denied) this.gate.logger.warn(fields, "session call denied");
    else if (statusOf(error) === Status.INTERNAL) this.gate.logger.error({ ...fields, err: error }, "session call failed");
    else this.gate.logger.info(fields, "session call refused");
    return this.record({ identity: this.identity, action: this.method, jobId: this.jobId, outcome: denied ? "denied" : "failed", reason, peer: this.peer.address, ...this.artifactFields() });
  }

  private artifactFields(): { artifact?: string; bytes?: number } {
    return this.artifact ? { artifact: this.artifact.sha256, bytes: this.artifact.bytes } : {};
  }

  /**
   * Writes the line, never failing the call: what was done is done, and a
   * caller told "failed" would retry a submit. A lost line is the operator's
   * alarm, logged as an error.
   */
  private async record(entry: AuditEntry): Promise<void> {
    try {
      await this.gate.audit.record(entry);
    } catch (error) {
      this.gate.logger.error({ err: error, method: this.method, caller: this.identity?.name, job: this.jobId }, "audit log write failed");
    }
  }
}
