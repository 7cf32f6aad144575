import { retryDelay } from "./scheduler.js";

/** How a queued job's failed scheduling attempts are spaced and counted. */
export interface AttemptPolicy {
  /** The wait after the first counted failure; it doubles with every further one. */
  intervalMs: number;
  /** The longest wait between attempts. */
  maxIntervalMs: number;
  /** After this many counted failures the job gives up (FINISHED:CAN_NOT_SCHEDULE). */
  maxAttempts: number;
  /**
   * No failure counts before this time (epoch ms): a site that has just
   * started gives the agents that were connected to its predecessor time to
   * rejoin, so a restart never eats into a job's attempts.
   */
  countFrom: number;
}

/** What a failed attempt means for the job. */
export type AttemptVerdict =
  /** Within a rejoin window (after the site's start or a job's end): not counted; look again at `retryAt` (or when an agent connects). */
  | { kind: "uncounted"; retryAt: number }
  /** Counted; the next attempt is due at `retryAt`. */
  | { kind: "retry"; attempts: number; retryAt: number }
  /** Counted, and the last one allowed: the job gives up. */
  | { kind: "exhausted"; attempts: number };

/**
 * Approved jobs waiting to start, in submit order, with their scheduling
 * attempts. Jobs a site restart interrupted wait here too (`resuming`), ahead
 * of the others: their clients go back to them first. Attempts are not
 * carried across restarts: a job queued before one gets a fresh window once
 * the site is back (and the rejoin window of AttemptPolicy.countFrom).
 */
export class ScheduleQueue {
  private readonly order: string[] = [];
  private readonly attempts = new Map<string, number>();
  private readonly nextAttemptAt = new Map<string, number>();
  /** Jobs that a site restart interrupted: they keep their DISPATCHED or RUNNING status and wait for their clients to run again. */
  private readonly resuming = new Set<string>();
  /** Jobs being aborted or deleted: never to be started, whatever transition is still in flight. */
  private readonly withdrawn = new Set<string>();

  constructor(private readonly policy: AttemptPolicy) {}

  /** No failure counts before `time` either (epoch ms): agents are expected back by then. */
  holdCountingUntil(time: number): void {
    this.policy.countFrom = Math.max(this.policy.countFrom, time);
  }

  /** Queues a job behind the others. */
  push(jobId: string): void {
    if (!this.order.includes(jobId)) this.order.push(jobId);
  }

  /** Queues jobs a restart interrupted ahead of every other job. */
  pushResuming(jobIds: readonly string[]): void {
    for (const jobId of jobIds) this.resuming.add(jobId);
    this.order.unshift(...jobIds.filter((jobId) => !this.order.includes(jobId)));
  }

  /** The queued jobs, first first (a copy: a pass may remove jobs as it goes). */
  jobs(): string[] {
    return [...this.order];
  }

  get size(): number {
    return this.order.length;
  }

  remove(jobId: string): void {
    const index = this.order.indexOf(jobId);
    if (index >= 0) this.order.splice(index, 1);
  }

  isResuming(jobId: string): boolean {
    return this.resuming.has(jobId);
  }

  /** The job is no longer waiting to resume (it started, gave up or was aborted). Returns whether it was. */
  stopResuming(jobId: string): boolean {
    return this.resuming.delete(jobId);
  }

  /** Takes a job out of scheduling for good (it is being aborted or deleted), until release(). */
  withdraw(jobId: string): void {
    this.withdrawn.add(jobId);
    this.remove(jobId);
  }

  isWithdrawn(jobId: string): boolean {
    return this.withdrawn.has(jobId);
  }

  release(jobId: string): void {
    this.withdrawn.delete(jobId);
  }

  /** When the job's next counted attempt is due (0: now). */
  dueAt(jobId: string): number {
    return this.nextAttemptAt.get(jobId) ?? 0;
  }

  /** Records that the job could not start at `now`, and says what follows. */
  failed(jobId: string, now: number): AttemptVerdict {
    if (now < this.policy.countFrom) {
      this.nextAttemptAt.set(jobId, this.policy.countFrom);
      return { kind: "uncounted", retryAt: this.policy.countFrom };
    }
    const attempts = (this.attempts.get(jobId) ?? 0) + 1;
    this.attempts.set(jobId, attempts);
    if (attempts >= this.policy.maxAttempts) return { kind: "exhausted", attempts };
    const retryAt = now + retryDelay(attempts, this.policy.intervalMs, this.policy.maxIntervalMs);
    this.nextAttemptAt.set(jobId, retryAt);
    return { kind: "retry", attempts, retryAt };
  }

  forget(jobId: string): void {
    this.remove(jobId);
    this.attempts.delete(jobId);
    this.nextAttemptAt.delete(jobId);
    this.resuming.delete(jobId);
  }
}
