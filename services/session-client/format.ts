/** A job's meta with the reference's JobMetaKey names: what `campfire ... --json` prints. */
export { jobMetaToDict } from "../site/jobs/model.js";
