/**
 * The trainer API's typed errors. services/site/transport/grpc-status.ts maps
 * each to its gRPC status code, with the other services' errors.
 */
export class TrainerApiError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A request field is malformed (INVALID_ARGUMENT); the message names the field and value. */
export class InvalidTrainerRequest extends TrainerApiError {}

/** Another trainer holds the sidecar and its lease still runs (ALREADY_EXISTS); the message names the holder. */
export class TrainerAlreadyAttached extends TrainerApiError {}

/** The call's session is not the attached one: replaced, detached or never attached (FAILED_PRECONDITION). */
export class SessionNotAttached extends TrainerApiError {}

/** The call names a task the trainer does not hold now, or comes out of turn (FAILED_PRECONDITION). */
export class TaskNotHeld extends TrainerApiError {}

/** The call names a task the sidecar has never handed out or has forgotten (NOT_FOUND). */
export class UnknownTrainerTask extends TrainerApiError {}

/** Data past the sidecar's limits (RESOURCE_EXHAUSTED). */
export class TrainerDataTooLarge extends TrainerApiError {}

/** A file path outside the shared directory (PERMISSION_DENIED). */
export class OutsideSharedDir extends TrainerApiError {}

/** The sidecar is stopping (UNAVAILABLE). */
export class TrainerApiStopping extends TrainerApiError {}

/** File transfer asked of a sidecar without a shared directory (FAILED_PRECONDITION). */
export class NoSharedDir extends TrainerApiError {}
