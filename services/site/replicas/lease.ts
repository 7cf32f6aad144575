/** Who holds the lease now, as the shared store sees it. */
export interface LeaseHolder {
  holder: string;
  epoch: number;
  /** Milliseconds until it expires; 0 or less when it has. */
  expiresInMs: number;
}

/**
 * The replicas' leader lease, kept by the shared store (services/postgres-store/lease.ts).
 * Every acquisition raises the epoch by one: the epoch is the fencing token
 * the leader's writes carry, so a write of an older epoch fails.
 */
export interface Lease {
  /** This process's name as a holder (unique per process). */
  readonly holder: string;
  /** Takes the lease when it is free or expired, for `leaseMs`; resolves with the new epoch, or undefined when another holder has it. */
  acquire(leaseMs: number): Promise<number | undefined>;
  /** Extends the lease held at `epoch` by `leaseMs` from now; false when it is no longer held at that epoch (taken over, or expired). */
  renew(epoch: number, leaseMs: number): Promise<boolean>;
  /** Lets the lease at `epoch` expire now, so that a standby takes over at once (a graceful stop); false when it was not held at `epoch`. */
  release(epoch: number): Promise<boolean>;
  /** The current holder, if any. */
  current(): Promise<LeaseHolder | undefined>;
}

/** What a fenced store needs to know: the epoch its writes carry, and whom to tell when a write finds the lease lost. */
export interface Fence {
  epoch: number;
  lost(error: Error): void;
}

/** A job store shared by replicas: its lease, and its writes fenced on the epoch while this replica leads. */
export interface ReplicatedStore {
  readonly lease: Lease;
  /** From now on every write carries `fence`'s epoch (undefined: this replica is a standby and moves no job on). */
  fenceWith(fence: Fence | undefined): void;
}
