import { type ServiceError, status as Status, Metadata } from "@grpc/grpc-js";
import * as errors from "../errors.js";
import * as artifactErrors from "../artifacts/errors.js";
import * as jobErrors from "../jobs/errors.js";
import * as replicaErrors from "../replicas/errors.js";
import * as securityErrors from "../../security/errors.js";
import * as trainerErrors from "../../trainer-api/errors.js";

/** The one place where the site's typed errors become gRPC status codes. */
const STATUS_BY_ERROR: ReadonlyArray<[new (...args: never[]) => Error, Status]> = [
  [errors.MalformedMessage, Status.INVALID_ARGUMENT],
  [errors.OutOfOrderMessage, Status.FAILED_PRECONDITION],
  [errors.AgentIdConflict, Status.ALREADY_EXISTS],
  [errors.AgentBusy, Status.FAILED_PRECONDITION],
  [errors.AgentGone, Status.UNAVAILABLE],
  [errors.SiteShuttingDown, Status.UNAVAILABLE],
  [errors.TaskAborted, Status.CANCELLED],
  [errors.TaskDeadlineExceeded, Status.DEADLINE_EXCEEDED],
  [errors.PayloadNotFound, Status.NOT_FOUND],
  [errors.PayloadTooLarge, Status.RESOURCE_EXHAUSTED],
  [errors.MessageTooLarge, Status.RESOURCE_EXHAUSTED],
  [jobErrors.InvalidJobDefinition, Status.INVALID_ARGUMENT],
  [jobErrors.InvalidArgument, Status.INVALID_ARGUMENT],
  [jobErrors.JobNotFound, Status.NOT_FOUND],
  [jobErrors.JobNotDone, Status.FAILED_PRECONDITION],
  [jobErrors.JobStillRunning, Status.FAILED_PRECONDITION],
  // Both say: try again, through the address that routes to the leader.
  [replicaErrors.NotLeader, Status.UNAVAILABLE],
  [replicaErrors.LeaseLost, Status.UNAVAILABLE],
  [errors.HelloTimeout, Status.DEADLINE_EXCEEDED],
  [artifactErrors.ArtifactTooLarge, Status.RESOURCE_EXHAUSTED],
  [artifactErrors.TooManyUploads, Status.RESOURCE_EXHAUSTED],
  [artifactErrors.UploadOffsetMismatch, Status.FAILED_PRECONDITION],
  [artifactErrors.InvalidUpload, Status.INVALID_ARGUMENT],
  [artifactErrors.UploadSuperseded, Status.ABORTED],
  [artifactErrors.UploadStalled, Status.DEADLINE_EXCEEDED],
  [artifactErrors.UploadInterrupted, Status.CANCELLED],
  [securityErrors.Unauthenticated, Status.UNAUTHENTICATED],
  [securityErrors.PermissionDenied, Status.PERMISSION_DENIED],
  [securityErrors.TooManyStreams, Status.RESOURCE_EXHAUSTED],
  [trainerErrors.InvalidTrainerRequest, Status.INVALID_ARGUMENT],
  [trainerErrors.TrainerAlreadyAttached, Status.ALREADY_EXISTS],
  [trainerErrors.SessionNotAttached, Status.FAILED_PRECONDITION],
  [trainerErrors.TaskNotHeld, Status.FAILED_PRECONDITION],
  [trainerErrors.NoSharedDir, Status.FAILED_PRECONDITION],
  [trainerErrors.UnknownTrainerTask, Status.NOT_FOUND],
  [trainerErrors.TrainerDataTooLarge, Status.RESOURCE_EXHAUSTED],
  [trainerErrors.OutsideSharedDir, Status.PERMISSION_DENIED],
  [trainerErrors.TrainerApiStopping, Status.UNAVAILABLE],
];

export function statusOf(error: unknown): Status {
  for (const [type, code] of STATUS_BY_ERROR) if (error instanceof type) return code;
  return Status.INTERNAL;
}

/** A grpc-js error object for `error`; unknown (non-site) errors keep their message but become INTERNAL. */
export function toServiceError(error: unknown): Partial<ServiceError> {
  const details = error instanceof Error ? error.message : String(error);
  return { code: statusOf(error), details, metadata: new Metadata() };
}
