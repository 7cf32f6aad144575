import type { Logger } from "../../shared/logger.js";
import { LeaseLost } from "./errors.js";
import type { Lease } from "./lease.js";

export interface ElectionTimings {
  /** How long a lease lasts without renewal: a dead leader is replaced at most about this plus one renewal period later. */
  leaseMs: number;
  /** How often the leader renews and a standby tries to take over. Default leaseMs / 3. */
  renewMs?: number;
}

export interface ElectionEvents {
  /** This replica took the lease at `epoch`: it is the leader now. */
  elected(epoch: number): Promise<void> | void;
  /** The lease was lost (a fenced write, a failed renewal, or a renewal too late): stop leading at once. Called once. */
  lost(error: LeaseLost): void;
}

/**
 * One replica's side of the leader lease: as a standby, it tries to take the
 * lease every renewal period; as the leader, it renews it, and counts the
 * lease lost when a renewal finds another epoch, or when no renewal succeeded
 * within the lease (measured on this process's monotonic clock from the start
 * of the last successful renewal, so it gives up before the database lets
 * anyone else take over). One log line per lease event, with the epoch.
 */
export class LeaderElection {
  private readonly renewMs: number;
  private epoch: number | undefined;
  /** performance.now() when the last successful acquisition or renewal was sent. */
  private renewedAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lostAlready = false;

  constructor(
    private readonly lease: Lease,
    private readonly timings: ElectionTimings,
    private readonly events: ElectionEvents,
    private readonly logger: Logger,
  ) {
    this.renewMs = timings.renewMs ?? Math.max(100, Math.floor(timings.leaseMs / 3));
    if (this.renewMs * 2 > timings.leaseMs) throw new Error(`the lease (${timings.leaseMs} ms) must last at least two renewal periods (${this.renewMs} ms)`);
  }

  /** The epoch this replica leads at, or undefined while it is a standby. */
  get leading(): number | undefined {
    return this.epoch;
  }

  start(): void {
    this.logger.info({ holder: this.lease.holder, leaseMs: this.timings.leaseMs, renewMs: this.renewMs }, "standing for leader");
    void this.tick();
  }

  /** Called by whoever finds the lease lost (a fenced write): steps down once. */
  lost(error: LeaseLost): void {
    if (this.lostAlready || this.epoch === undefined || error.epoch !== this.epoch) return;
    this.lostAlready = true;
    this.stopped = true;
    clearTimeout(this.timer);
    this.logger.warn({ epoch: error.epoch, holder: this.lease.holder, reason: error.message }, "lease lost");
    this.events.lost(error);
  }

  /** Stops standing (the store, when it closes, lets a held lease expire at once: PostgresJobStore.close). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    const sentAt = performance.now();
    try {
      if (this.epoch === undefined) await this.tryAcquire(sentAt);
      else await this.renew(this.epoch, sentAt);
    } catch (error) {
      if (this.epoch !== undefined && performance.now() - this.renewedAt >= this.timings.leaseMs) {
        return this.lost(new LeaseLost(`the lease could not be renewed within ${this.timings.leaseMs} ms: ${(error as Error).message}`, this.epoch));
      }
      this.logger.warn({ err: error, epoch: this.epoch }, this.epoch === undefined ? "could not try to take the lease" : "could not renew the lease; trying again");
    }
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), this.renewMs);
  }

  private async tryAcquire(sentAt: number): Promise<void> {
    const epoch = await withTimeout(this.lease.acquire(this.timings.leaseMs), this.renewMs, "taking the lease");
    if (epoch === undefined || this.stopped) return;
    this.epoch = epoch;
    this.renewedAt = sentAt;
    this.logger.info({ epoch, holder: this.lease.holder }, "lease acquired");
    // Taking over runs beside the renewals, which must go on meanwhile.
    void Promise.resolve()
      .then(() => this.events.elected(epoch))
      .catch((error: unknown) => this.lost(new LeaseLost(`could not take over as the leader: ${(error as Error).message}`, epoch)));
  }

  private async renew(epoch: number, sentAt: number): Promise<void> {
    const sinceLast = sentAt - this.renewedAt;
    // Past the lease on our own clock (the process was paused, or the database slow): a standby may hold it already.
    if (sinceLast >= this.timings.leaseMs) return this.lost(new LeaseLost(`the lease was not renewed for ${Math.round(sinceLast)} ms, past its ${this.timings.leaseMs} ms`, epoch));
    const remaining = this.timings.leaseMs - sinceLast;
    if (!(await withTimeout(this.lease.renew(epoch, this.timings.leaseMs), remaining, "renewing the lease"))) {
      const holder = await this.lease.current().catch(() => undefined);
      return this.lost(new LeaseLost(`the lease is held by ${holder ? `${holder.holder} at epoch ${holder.epoch}` : "no one (it expired)"}`, epoch));
    }
    if (this.stopped) return;
    this.renewedAt = sentAt;
    if (sinceLast > this.renewMs * 1.5) this.logger.warn({ epoch, sinceLastMs: Math.round(sinceLast), renewMs: this.renewMs }, "lease renewed late");
  }
}

/** `work`, or a rejection once `ms` passed. */
function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took longer than ${Math.round(ms)} ms`)), ms)));
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
