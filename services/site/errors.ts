import { ReturnCode } from "../shared/return-codes.js";

/**
 * The site's typed errors. Each carries the return code the reference system
 * would give the same failure, so workflows can treat an error and an agent's
 * non-OK result alike. transport/grpc-status.ts maps them to gRPC codes, in one place.
 */
export abstract class SiteError extends Error {
  abstract readonly returnCode: ReturnCode;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A message on an agent stream that cannot be decoded or is missing required fields. */
export class MalformedMessage extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_BAD_REQUEST_DATA;
}

/** A message on an agent stream that is well formed but not allowed now (e.g. a second hello). */
export class OutOfOrderMessage extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_BAD_REQUEST_DATA;
}

/** The agent already has a task in flight; the exchange runs one task at a time per agent. */
export class AgentBusy extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_BAD_REQUEST_DATA;
}

/** The agent stopped showing signs of life, its stream ended, or it left. */
export class AgentGone extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_COMMUNICATION_ERROR;
}

/** The workflow aborted the task (its abort signal fired). */
export class TaskAborted extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_TASK_ABORTED;
}

/** The task's deadline passed before its result arrived. */
export class TaskDeadlineExceeded extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_TIMEOUT;
}

/** The site is shutting down. */
export class SiteShuttingDown extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_SERVICE_UNAVAILABLE;
}

/** A payload id that the site does not hold (never uploaded, or already consumed). */
export class PayloadNotFound extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_BAD_REQUEST_DATA;
}

/** An upload larger than the site accepts. */
export class PayloadTooLarge extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_BAD_REQUEST_DATA;
}

/** A hello whose agent id is already registered for another client. */
export class AgentIdConflict extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_BAD_REQUEST_DATA;
}

/** A message larger than the service accepts. */
export class MessageTooLarge extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_BAD_REQUEST_DATA;
}

/** A Connect stream that did not say hello in time. */
export class HelloTimeout extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_TIMEOUT;
}
