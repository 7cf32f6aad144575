// The site as a library (the package's "campfire/site" export): start one in your own process.
export { AGENT_SERVICE_NAME, DEFAULT_TIMINGS, SESSION_SERVICE_NAME, SiteServer, type SiteOptions } from "./site-server.js";
export type { JobOptions } from "./jobs/manager.js";
export type { Policy } from "../security/authorization.js";
export { parseTokens, type TokenMap } from "./session/auth.js";
