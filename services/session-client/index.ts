export { JobDefinition, JobMeta, RunStatus } from "../../gen/campfire/admin/v1/job.js";
export { statusName, isFinished } from "../site/jobs/model.js";
export * from "./errors.js";
export { type JobFolder, readJobFolder } from "./job-folder.js";
export { ARTIFACT_THRESHOLD_BYTES, type ArtifactSource, bytesSource, fileSource, type UploadProgress } from "./artifacts.js";
export { DEFAULT_SITE, type DownloadProgress, type ListJobsOptions, MonitorReturnCode, type MonitorOptions, Session, type SessionOptions, type SystemInfo } from "./session.js";
export { jobMetaToDict } from "./format.js";
