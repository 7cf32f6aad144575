import { ReturnCode } from "../../shared/return-codes.js";
import { SiteError } from "../errors.js";

/**
 * The job and session errors. Each message names what is wrong and what to do;
 * transport/grpc-status.ts maps each class to its gRPC code.
 */

/** A job definition that breaks a rule. The message names the field and the value. */
export class InvalidJobDefinition extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_BAD_REQUEST_DATA;
}

/** A job larger than the site accepts. */
export class JobTooLarge extends InvalidJobDefinition {}

/** A request argument (other than the definition) that is not acceptable. */
export class InvalidArgument extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_BAD_REQUEST_DATA;
}

/** No job has the id (never submitted, or deleted). */
export class JobNotFound extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_BAD_REQUEST_DATA;
}

/** The job has not finished, so it has no result yet. */
export class JobNotDone extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_SERVER_NOT_READY;
}

/** The job is dispatched or running, so it cannot be deleted. */
export class JobStillRunning extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_SERVER_NOT_READY;
}

export { PermissionDenied, Unauthenticated } from "../../security/errors.js";

/** A stored job changed under an update (another writer got there first). */
export class StaleJobUpdate extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_ERROR;
}
