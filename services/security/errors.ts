import { SiteError } from "../site/errors.js";
import { ReturnCode } from "../shared/return-codes.js";

/**
 * Who the caller is could not be established: no token or certificate, a
 * malformed or unknown token, a certificate not from the project's CA,
 * expired or revoked. UNAUTHENTICATED at the wire.
 */
export class Unauthenticated extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_UNAUTHENTICATED;
}

/**
 * The caller is known but lacks the right: a message names the right and the
 * rule that withheld it. PERMISSION_DENIED at the wire.
 */
export class PermissionDenied extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_UNAUTHORIZED;
}

/** A caller holds more streams or calls than the site allows one identity. RESOURCE_EXHAUSTED at the wire. */
export class TooManyStreams extends SiteError {
  readonly returnCode = ReturnCode.RETURN_CODE_SERVICE_UNAVAILABLE;
}
