import { type ServiceError, status as Status } from "@grpc/grpc-js";

/**
 * The session client's errors, named after the reference SessionSpec's. Each
 * message says what went wrong and, where it can, what to do.
 */
export class SessionError extends Error {
  /** The gRPC status behind the error, when there was one. */
  readonly code: Status | undefined;

  constructor(message: string, options?: { cause?: unknown; code?: Status }) {
    super(message, options);
    this.name = new.target.name;
    this.code = options?.code;
  }
}

/** The site cannot be reached, stopped answering, or is shutting down. */
export class NoConnection extends SessionError {}
/** The session was closed; open a new one. */
export class SessionClosed extends SessionError {}
/** An argument (other than the job definition) is not acceptable. */
export class InvalidArgumentError extends SessionError {}
/** The job folder or definition breaks a rule; the message names the field and value. */
export class InvalidJobDefinition extends SessionError {}
/** No job has the id. */
export class JobNotFound extends SessionError {}
/** The job is in the wrong state for the call: not finished (download), or still running (delete). */
export class JobNotDone extends SessionError {}
/** The site failed in a way the caller cannot fix. */
export class InternalError extends SessionError {}
/** The site did not accept the token. */
export class AuthenticationError extends SessionError {}
/** The token's user may not do this. */
export class AuthorizationError extends SessionError {}

/** An artifact upload that could not complete: it was superseded, or kept failing to resume. */
export class ArtifactUploadError extends SessionError {}

/** Calls that carry a job definition or its artifacts: INVALID_ARGUMENT there means the definition. */
const DEFINITION_METHODS = new Set(["submitJob", "cloneJob", "uploadArtifact", "getArtifactStatus"]);
const ARTIFACT_METHODS = new Set(["uploadArtifact", "getArtifactStatus"]);

/** The one place where gRPC status codes become the session's typed errors. */
export function sessionErrorOf(error: ServiceError, method: string, site: string): SessionError {
  const details = error.details || error.message;
  const options = { cause: error, code: error.code };
  switch (error.code) {
    case Status.UNAVAILABLE:
      return new NoConnection(`cannot reach the site at ${site}: ${details}. Is it running? Set its address with --site or CAMPFIRE_SITE`, options);
    case Status.DEADLINE_EXCEEDED:
      return new NoConnection(`the site at ${site} did not answer ${method} in time (${details}); it may be overloaded, or raise the deadline with --timeout-ms`, options);
    case Status.INVALID_ARGUMENT:
      return DEFINITION_METHODS.has(method) ? new InvalidJobDefinition(details, options) : new InvalidArgumentError(details, options);
    case Status.RESOURCE_EXHAUSTED:
      return DEFINITION_METHODS.has(method)
        ? new InvalidJobDefinition(`the site refused the job as too large: ${details}`, options)
        : new InternalError(`the site ran out of a resource: ${details}`, options);
    case Status.NOT_FOUND:
      return new JobNotFound(details, options);
    case Status.FAILED_PRECONDITION:
      return ARTIFACT_METHODS.has(method) ? new ArtifactUploadError(details, options) : new JobNotDone(details, options);
    case Status.ABORTED:
      return new ArtifactUploadError(details, options);
    case Status.UNAUTHENTICATED:
      return new AuthenticationError(details, options);
    case Status.PERMISSION_DENIED:
      return new AuthorizationError(details, options);
    case Status.CANCELLED:
      return new SessionClosed(`${method} was cancelled: ${details}`, options);
    default:
      return new InternalError(`${method} failed on the site (${Status[error.code] ?? error.code}): ${details}`, options);
  }
}
