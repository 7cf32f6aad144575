import { randomUUID } from "node:crypto";
import { SessionNotAttached, TrainerAlreadyAttached } from "./errors.js";

/** How a session wants tensors: inline or in chunks by size, or always as a shared-volume file. */
export type TensorTransfer = "chunks" | "file";

export interface TrainerSession {
  readonly id: string;
  readonly trainerName: string;
  readonly leaseMs: number;
  readonly transfer: TensorTransfer;
  readonly attachedAt: number;
  lastCallAt: number;
  callsInProgress: number;
}

/**
 * Which trainer the sidecar serves: one session at a time, held by a lease
 * that every call renews and that a call in progress (a long-polling GetTask)
 * keeps alive. Lapses are judged lazily, when another trainer asks to attach:
 * no timers, and a holder whose lease lapsed while nobody else wanted the
 * sidecar simply carries on.
 */
export class SessionLease {
  private current: TrainerSession | undefined;

  constructor(private readonly now: () => number = Date.now) {}

  /**
   * Starts a session for `trainerName`. The same name replaces its earlier
   * session at once (the trainer restarted); another name is refused while the
   * holder's lease runs.
   */
  attach(trainerName: string, leaseMs: number, transfer: TensorTransfer): { session: TrainerSession; replaced: TrainerSession | undefined } {
    const holder = this.current;
    if (holder && holder.trainerName !== trainerName && this.isLive(holder)) {
      const idleMs = this.now() - holder.lastCallAt;
      throw new TrainerAlreadyAttached(
        `this sidecar already serves trainer "${holder.trainerName}" (session ${holder.id}, attached ${new Date(holder.attachedAt).toISOString()}, ` +
          `${holder.callsInProgress > 0 ? "a call in progress" : `last call ${idleMs} ms ago`}); one trainer per sidecar: ` +
          `stop that trainer, or attach again after its ${holder.leaseMs} ms lease lapses without a call`,
      );
    }
    const now = this.now();
    const session: TrainerSession = { id: randomUUID(), trainerName, leaseMs, transfer, attachedAt: now, lastCallAt: now, callsInProgress: 0 };
    this.current = session;
    return { session, replaced: holder };
  }

  /** Begins a call of `sessionId`; pair with leave(). Throws SessionNotAttached for any session but the current one. */
  enter(sessionId: string): TrainerSession {
    const session = this.check(sessionId);
    session.callsInProgress++;
    session.lastCallAt = this.now();
    return session;
  }

  leave(session: TrainerSession): void {
    session.callsInProgress--;
    session.lastCallAt = this.now();
  }

  /** The current session, if `sessionId` is it; otherwise throws SessionNotAttached saying why. */
  check(sessionId: string): TrainerSession {
    const current = this.current;
    if (current?.id === sessionId) return current;
    throw new SessionNotAttached(
      current
        ? `session ${JSON.stringify(sessionId)} is not attached: trainer "${current.trainerName}" holds the sidecar now (session ${current.id}); call Attach again`
        : `session ${JSON.stringify(sessionId)} is not attached (detached, or the sidecar restarted); call Attach again`,
    );
  }

  detach(sessionId: string): TrainerSession {
    const session = this.check(sessionId);
    this.current = undefined;
    return session;
  }

  private isLive(session: TrainerSession): boolean {
    return session.callsInProgress > 0 || this.now() - session.lastCallAt < session.leaseMs;
  }
}
