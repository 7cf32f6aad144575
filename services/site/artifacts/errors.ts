import { ReturnCode } from "../../shared/return-codes.js";
import { SiteError } from "../errors.js";

/**
 * The artifact upload's errors; transport/grpc-status.ts maps each to its
 * gRPC code. Messages name the field and say what to do.
 */

/** An artifact larger than the site accepts, or than its disk has room for: RESOURCE_EXHAUSTED. */
export class ArtifactTooLarge extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_BAD_REQUEST_DATA;
}

/** More uploads in progress than the site takes at once: RESOURCE_EXHAUSTED. */
export class TooManyUploads extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_SERVICE_UNAVAILABLE;
}

/** header.offset is not what the site holds of the artifact: FAILED_PRECONDITION; ask GetArtifactStatus. */
export class UploadOffsetMismatch extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_BAD_REQUEST_DATA;
}

/** The bytes do not hash to the announced digest, or a header or chunk breaks the upload's rules: INVALID_ARGUMENT. */
export class InvalidUpload extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_BAD_REQUEST_DATA;
}

/** A newer upload of the same artifact by the same caller took over: ABORTED. */
export class UploadSuperseded extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_TASK_ABORTED;
}

/** No message arrived on an upload for too long: DEADLINE_EXCEEDED. */
export class UploadStalled extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_TIMEOUT;
}

/** The caller went away (cancelled, or its connection dropped) mid-upload: CANCELLED; the bytes received are kept. */
export class UploadInterrupted extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_COMMUNICATION_ERROR;
}
