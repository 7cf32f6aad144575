import { X509Certificate } from "node:crypto";
import { z } from "zod";
import type { Task } from "../../gen/campfire/agent/v1/agent_service.js";
import { ADMIN_ROLES, describeIdentity, type Identity } from "../security/identity.js";
import { firstDifference, type JobManifest, JobSignatureProblem, signatureDigest, verifyJobSignature } from "../security/job-signing.js";
import { certifyKit, type TlsKit } from "../security/kit.js";
import type { DataExchange } from "../shared/payload.js";
import { readYamlFile } from "../shared/yaml-file.js";
import { PROTOCOL_TASKS, SECAGG_META } from "../secure-aggregation/protocol.js";

/**
 * A client's own say over what runs on its data, whatever the site says:
 * which organisations' and roles' admins may run jobs here, which workflows
 * and task names are allowed, and whether jobs must be signed. Read from a
 * YAML or JSON file (`campfire agent --policy <file>`):
 *
 *   require_signed_jobs: true           # default: true when the agent has a TLS kit
 *   orgs: [a, b]                        # submitters' organisations; default ["*"]: any
 *   roles: [project_admin, lead]        # submitters' roles; default project_admin and lead
 *   workflows: [fedavg, cross_site_eval] # default ["*"]
 *   task_names: [train, validate, submit_model] # default ["*"]
 *
 * "*" allows anything. orgs, roles and workflows can only be checked on a
 * signed job: an unsigned job's submitter and workflow are whatever the site
 * says, so an agent that takes unsigned jobs checks only their task names.
 */
export interface JobPolicy {
  /** Refuse jobs without a valid signature. Undefined: true when the agent has a TLS kit with a certificate. */
  requireSignedJobs?: boolean;
  orgs: readonly string[];
  roles: readonly string[];
  workflows: readonly string[];
  taskNames: readonly string[];
}

/** Who may submit by default: the roles that may submit jobs in the reference's default policy. */
export const DEFAULT_JOB_POLICY: JobPolicy = Object.freeze({ orgs: ["*"], roles: ["project_admin", "lead"], workflows: ["*"], taskNames: ["*"] });

const ANY = "*";
const list = z.array(z.string().min(1, "must not hold empty names")).min(1, 'must list at least one name, or "*" for any');
const policySchema = z
  .object({
    require_signed_jobs: z.boolean().optional(),
    orgs: list.default([...DEFAULT_JOB_POLICY.orgs]),
    roles: z
      .array(z.enum([ANY, ...ADMIN_ROLES], { message: `must be "*" or one of ${ADMIN_ROLES.join(", ")}` }))
      .min(1, 'must list at least one role, or "*" for any')
      .default([...DEFAULT_JOB_POLICY.roles] as Array<(typeof ADMIN_ROLES)[number]>),
    workflows: list.default([...DEFAULT_JOB_POLICY.workflows]),
    task_names: list.default([...DEFAULT_JOB_POLICY.taskNames]),
  })
  .strict();

/** A policy document (the file's parsed content); errors name the source, the field and the value. */
export function parseJobPolicy(document: unknown, source = "job policy"): JobPolicy {
  const parsed = policySchema.safeParse(document ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`${source}: ${issue.path.join(".") || "the document"}: ${issue.message}`);
  }
  const { require_signed_jobs, orgs, roles, workflows, task_names } = parsed.data;
  return { requireSignedJobs: require_signed_jobs, orgs, roles, workflows, taskNames: task_names };
}

/** Reads a policy file, YAML or JSON. */
export async function loadJobPolicy(path: string): Promise<JobPolicy> {
  return parseJobPolicy(await readYamlFile(path, `job policy ${path}`), `job policy ${path}`);
}

/** A job whose signature this agent verified: what the trainer may rely on, whatever the site sends. */
export interface SignedJob {
  /** The job's name, as signed. */
  name: string;
  /** Who signed (and so submitted) it. */
  signer: Identity;
  signedAt: Date;
  /** The signed workflow (the server app's server_config.workflow), when it names one. */
  workflow: string | undefined;
  /** The app this client runs, and its signed config_fed_client.json (null when the app has none). */
  app: string;
  clientConfig: Record<string, unknown> | null;
  manifest: JobManifest;
}

/** What the agent does with a task: run it (with the signed job, when it is signed) or refuse it with a reason. */
export type Verdict = { accepted: true; job: SignedJob | undefined } | { accepted: false; reason: string };

/** How many verified (or refused) jobs the gate remembers. */
const REMEMBERED_JOBS = 32;

/**
 * The agent's check of every task against its policy and the job's
 * signature, before the trainer sees it. A job's signature is verified once
 * (per job id and signature) and the verdict cached; the task-level checks
 * (its name, what its data says of the job) run on every task.
 */
export class JobGate {
  readonly policy: Required<JobPolicy>;
  private readonly ca: X509Certificate | undefined;
  private readonly project: string | undefined;
  private readonly verdicts = new Map<string, { job: SignedJob } | { reason: string }>();

  constructor(
    policy: JobPolicy | undefined,
    kit: TlsKit | undefined,
    private readonly clientName: string,
  ) {
    const own = kit?.cert && kit.key ? certifyKit(kit).identity : undefined;
    this.ca = kit ? new X509Certificate(kit.ca) : undefined;
    this.project = own?.project;
    const base = policy ?? DEFAULT_JOB_POLICY;
    this.policy = { ...DEFAULT_JOB_POLICY, ...base, requireSignedJobs: base.requireSignedJobs ?? Boolean(own) };
    if (this.policy.requireSignedJobs && !own) {
      throw new Error("the job policy requires signed jobs (require_signed_jobs), but the agent has no TLS kit with a certificate to check them against: give it its kit (--tls-dir)");
    }
  }

  /** The checks that need only the task itself: the job's signature and signer, the deploy map, the task name. */
  check(task: Task): Verdict {
    const signature = task.jobSignature;
    let job: SignedJob | undefined;
    if (signature && this.ca && this.project) {
      const key = `${task.jobId}\n${signatureDigest(signature)}`;
      let verdict = this.verdicts.get(key);
      if (!verdict) {
        verdict = this.verifyJob(task, this.ca, this.project);
        this.verdicts.set(key, verdict);
        if (this.verdicts.size > REMEMBERED_JOBS) this.verdicts.delete(this.verdicts.keys().next().value as string);
      }
      if ("reason" in verdict) return { accepted: false, reason: verdict.reason };
      job = verdict.job;
    } else if (this.policy.requireSignedJobs) {
      return { accepted: false, reason: `job ${task.jobId} is not signed, and this client runs only jobs signed by an admin of the project (require_signed_jobs); submit it with an admin's kit (campfire submit --tls-dir <kit>)` };
    }
    if (!allows(this.policy.taskNames, task.taskName)) {
      return { accepted: false, reason: `task ${JSON.stringify(task.taskName)} is not one this client's policy allows (task_names: ${this.policy.taskNames.join(", ")})` };
    }
    if (job) {
      const difference = task.clientConfig && firstDifference((job.clientConfig ?? {}) as never, task.clientConfig as never, "client_config");
      if (difference) {
        return {
          accepted: false,
          reason: `the task does not match the signed job: Task.${difference.path} is ${JSON.stringify(difference.actual ?? null)}, the signed config_fed_client.json of app ${job.app} has ${JSON.stringify(difference.signed ?? null)}; the site altered the job after it was signed`,
        };
      }
      const facts = workflowFacts(job.manifest, job.workflow);
      if (facts?.taskNames && !facts.taskNames.includes(task.taskName)) {
        return {
          accepted: false,
          reason: `the task does not match the signed job: task ${JSON.stringify(task.taskName)} is not one the signed workflow ${job.workflow} sends (${facts.taskNames.join(", ")}); the site altered the job or sent a task of its own`,
        };
      }
    }
    return { accepted: true, job };
  }

  /** The checks that need the task's data: what its meta says of the job must be what was signed. */
  checkData(task: Task, job: SignedJob | undefined, data: DataExchange): string | undefined {
    if (!job) return undefined;
    const meta = (data.meta ?? {}) as Record<string, unknown>;
    const mismatch = (what: string) => `the task does not match the signed job: ${what}; the site altered the job after it was signed`;
    const facts = workflowFacts(job.manifest, job.workflow);
    if (facts?.rounds) {
      const { first, end } = facts.rounds;
      if (meta.total_rounds !== undefined && meta.total_rounds !== end) return mismatch(`the task says total_rounds ${JSON.stringify(meta.total_rounds)}, the signed ${job.workflow} config gives ${end}`);
      const round = meta.current_round;
      if (round !== undefined && (typeof round !== "number" || round < first || round >= end)) return mismatch(`the task is for round ${JSON.stringify(round)}, the signed ${job.workflow} config runs rounds ${first} to ${end - 1}`);
    }
    if (facts?.maskedTrainTask === task.taskName && meta[SECAGG_META] === undefined) {
      return mismatch(`the signed workflow ${job.workflow} masks every training result, and this ${task.taskName} task carries no secure aggregation round: its result would leave unmasked`);
    }
    if (meta.client_config !== undefined) {
      // A job without config_fed_client.json signs null; the site sends such a client {}: nothing either way.
      const difference = firstDifference((job.clientConfig ?? {}) as never, meta.client_config as never, "client_config");
      if (difference) return mismatch(`its meta ${difference.path} is ${JSON.stringify(difference.actual ?? null)}, the signed config_fed_client.json of app ${job.app} has ${JSON.stringify(difference.signed ?? null)}`);
    }
    return undefined;
  }

  private verifyJob(task: Task, ca: X509Certificate, project: string): { job: SignedJob } | { reason: string } {
    let verified;
    try {
      verified = verifyJobSignature(task.jobSignature!, ca, project);
    } catch (error) {
      if (error instanceof JobSignatureProblem) return { reason: `the job's signature does not hold: ${error.message}` };
      throw error;
    }
    const { manifest, signer, signedAt } = verified;
    const who = `its submitter ${describeIdentity(signer)}`;
    if (!allows(this.policy.orgs, signer.org)) return { reason: `${who} is of organisation ${signer.org}, and this client's policy allows jobs from organisations ${this.policy.orgs.join(", ")}` };
    if (!allows(this.policy.roles, signer.role ?? "")) return { reason: `${who} has the role ${signer.role}, and this client's policy allows jobs from the roles ${this.policy.roles.join(", ")}` };
    const app = appOf(manifest.deploy_map, this.clientName);
    if (app === undefined) {
      return { reason: `the signed job does not deploy this client: ${this.clientName} is not in its deploy_map (${JSON.stringify(manifest.deploy_map)}); the site altered the job or sent a task of another` };
    }
    const serverApp = appOf(manifest.deploy_map, "server");
    const serverConfig = serverApp === undefined ? null : manifest.apps[serverApp]?.server_config ?? null;
    const workflow = typeof serverConfig?.workflow === "string" ? serverConfig.workflow : undefined;
    if (!allows(this.policy.workflows, workflow ?? "")) {
      return { reason: `the signed job runs the workflow ${workflow ?? "(none named)"}, and this client's policy allows ${this.policy.workflows.join(", ")}` };
    }
    const clientConfig = manifest.apps[app]?.client_config ?? null;
    return { job: { name: manifest.name, signer, signedAt, workflow, app, clientConfig, manifest } };
  }
}

function allows(allowed: readonly string[], value: string): boolean {
  return allowed.includes(ANY) || allowed.includes(value);
}

/** The app a site runs under a manifest's deploy map: the entry naming it, else the "@ALL" one. */
function appOf(deployMap: Record<string, string[]>, site: string): string | undefined {
  const entries = Object.entries(deployMap);
  return (entries.find(([, sites]) => sites.includes(site)) ?? entries.find(([, sites]) => sites.includes("@ALL")))?.[0];
}

/**
 * What a signed built-in workflow's config implies about its tasks: the task
 * names it sends and the rounds it runs, with the workflows' defaults
 * (services/site/workflows; test/security-signed-jobs.test.ts holds this to
 * them). Undefined for a workflow this agent does not know: only the
 * policy's task_names then apply.
 */
export function workflowFacts(
  manifest: JobManifest,
  workflow: string | undefined,
): { taskNames?: string[]; rounds?: { first: number; end: number }; maskedTrainTask?: string } | undefined {
  const serverApp = appOf(manifest.deploy_map, "server");
  const config = serverApp === undefined ? undefined : manifest.apps[serverApp]?.server_config;
  const args = (config?.args ?? {}) as Record<string, unknown>;
  const text = (key: string, fallback: string) => (typeof args[key] === "string" ? (args[key] as string) : fallback);
  const count = (key: string, fallback: number) => (typeof args[key] === "number" ? (args[key] as number) : fallback);
  switch (workflow) {
    case "fedavg": {
      const names = [text("train_task_name", "train")];
      if (typeof args.validation_task_name === "string") names.push(args.validation_task_name);
      if (args.cross_site_eval === true) names.push("submit_model", "validate");
      const first = count("start_round", 0);
      return { taskNames: [...new Set(names)], rounds: { first, end: first + count("num_rounds", 5) } };
    }
    case "cyclic":
      return { taskNames: [text("train_task_name", "train")], rounds: { first: 0, end: count("num_rounds", 3) } };
    case "secure_fedavg": {
      // Its training task must carry a secure aggregation round, so that the agent masks the result (checkData).
      const train = text("train_task_name", "train");
      const first = count("start_round", 0);
      return { taskNames: [train, ...Object.values(PROTOCOL_TASKS)], rounds: { first, end: first + count("num_rounds", 5) }, maskedTrainTask: train };
    }
    case "cross_site_eval":
      return { taskNames: [...new Set([text("submit_model_task_name", "submit_model"), text("validation_task_name", "validate")])] };
    case "broadcast":
      return typeof args.task_name === "string" ? { taskNames: [args.task_name] } : undefined;
    default:
      return undefined;
  }
}
