import { ReturnCode, returnCodeToJSON } from "../../gen/campfire/common/v1/return_code.js";

export { ReturnCode };

const PREFIX = "RETURN_CODE_";

/** The reference system's string for a return code ("OK", "TASK_ABORTED", ...). */
export function returnCodeName(code: ReturnCode): string {
  return returnCodeToJSON(code).replace(PREFIX, "");
}


/** Only these outcomes carry data onward; every other code is the task's failure. */
export function carriesData(code: ReturnCode): boolean {
  return code === ReturnCode.RETURN_CODE_OK || code === ReturnCode.RETURN_CODE_EARLY_TERMINATION || code === ReturnCode.RETURN_CODE_UNSPECIFIED;
}
