import { ReturnCode } from "../../shared/return-codes.js";
import { SiteError } from "../errors.js";

/**
 * This replica held the leader lease and no longer does: another replica took
 * it over (a newer epoch), or it was not renewed in time. A write fenced on the
 * lost epoch fails with it; the replica stops its workflows at once and steps down.
 */
export class LeaseLost extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_SERVICE_UNAVAILABLE;

  constructor(
    message: string,
    /** The epoch this replica held. */
    readonly epoch: number,
  ) {
    super(message);
  }
}

/** This replica is a standby: it serves reads, while jobs are moved on (abort, delete, agents' tasks) by the leader. */
export class NotLeader extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_SERVICE_UNAVAILABLE;
}
