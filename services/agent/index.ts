export { Agent, type AgentTask, type ResultFileOptions, type SubmitOptions } from "./agent.js";
export { AgentAborted, AgentClosed, AgentEnded, AgentError, AgentPeerGone, CallStateError } from "./errors.js";
export type { AgentOptions } from "./options.js";
export { FilterConfigError, loadLocalPrivacy, type LocalPrivacy, parseLocalPrivacy } from "../privacy/config.js";
export { ReturnCode } from "../shared/return-codes.js";
export { DataKind } from "../../gen/campfire/common/v1/exchange.js";
export { LogLevel } from "../../gen/campfire/agent/v1/agent_service.js";
export { DType, float32Tensor, float32Values } from "../shared/tensor.js";
export { DEFAULT_HEAP_HEADROOM_MB, tuneHeapGrowth } from "../shared/memory.js";
