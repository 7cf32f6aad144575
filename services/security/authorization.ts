import { z } from "zod";
import { PermissionDenied } from "./errors.js";
import { readYamlFile } from "../shared/yaml-file.js";
import { ADMIN_ROLES, type AdminRole, describeIdentity, type Identity } from "./identity.js";

/**
 * Who may do what with jobs: NVFLARE-style rights, each granted to a role over
 * a scope of jobs. Nothing here knows gRPC; the site's session handlers ask.
 *
 * - view: ListJobs, GetJobMeta, MonitorJob, GetSystemInfo, and CloneJob of
 *   the job cloned
 * - submit: SubmitJob, CloneJob (a clone is the caller's submission)
 * - manage: AbortJob, DeleteJob
 * - download: DownloadJobResult
 */
export const RIGHTS = ["view", "submit", "manage", "download"] as const;
export type Right = (typeof RIGHTS)[number];

/**
 * Which jobs a right reaches: none; own (jobs the caller submitted); org (its
 * own and those submitted by its organisation); any. Submit concerns no
 * existing job: every scope but none grants it.
 */
export const SCOPES = ["none", "own", "org", "any"] as const;
export type Scope = (typeof SCOPES)[number];

export type RoleRights = Readonly<Record<Right, Scope>>;
/** Every role's scope of every right. */
export type Policy = Readonly<Record<AdminRole, RoleRights>>;

/** NVFLARE's defaults, but org admins may submit. */
export const DEFAULT_POLICY: Policy = Object.freeze({
  project_admin: Object.freeze({ view: "any", submit: "any", manage: "any", download: "any" }),
  org_admin: Object.freeze({ view: "any", submit: "any", manage: "org", download: "org" }),
  lead: Object.freeze({ view: "any", submit: "any", manage: "own", download: "own" }),
  member: Object.freeze({ view: "any", submit: "none", manage: "none", download: "none" }),
});

/** The job a decision is about: who submitted it (a JobMeta will do). */
export interface JobOwner {
  jobId: string;
  submitter: string;
  /** Empty when the submitter had no organisation, or the job predates organisations being recorded. */
  submitterOrg: string;
}

/** Decides, by a policy, whether an identity holds a right over a job. */
export class Authorizer {
  constructor(readonly policy: Policy = DEFAULT_POLICY) {}

  /** The jobs `identity`'s `right` reaches; none for anyone but an admin with a role. */
  scope(identity: Identity, right: Right): Scope {
    if (identity.kind !== "admin" || !identity.role) return "none";
    return this.policy[identity.role][right];
  }

  /** Whether `identity` holds `right` over `job`, or (without a job) over any job at all. */
  permits(identity: Identity, right: Right, job?: JobOwner): boolean {
    return reaches(this.scope(identity, right), identity, job);
  }

  /** Throws PermissionDenied, naming the caller, the right, the job and the rule, unless permits(). */
  require(identity: Identity, right: Right, job?: JobOwner): void {
    const scope = this.scope(identity, right);
    if (reaches(scope, identity, job)) return;
    const where = job ? ` on job ${job.jobId} submitted by ${job.submitter}${job.submitterOrg ? ` of org ${job.submitterOrg}` : ""}` : "";
    throw new PermissionDenied(`${describeIdentity(identity)} lacks the right ${right}${where}: ${rule(identity, right, scope)}`);
  }
}

function reaches(scope: Scope, identity: Identity, job: JobOwner | undefined): boolean {
  if (scope === "none") return false;
  if (!job || scope === "any") return true;
  if (job.submitter === identity.name) return true;
  return scope === "org" && identity.org !== "" && job.submitterOrg === identity.org;
}

const ACTS: Readonly<Record<Right, string>> = { view: "view", submit: "submit", manage: "manage", download: "download the results of" };

/** The rule that withheld a right, in words: "a lead may manage only its own jobs". */
function rule(identity: Identity, right: Right, scope: Scope): string {
  if (identity.kind !== "admin" || !identity.role) return `only admins hold rights, and ${identity.name} is a ${identity.kind}`;
  const who = `${/^[aeiou]/.test(identity.role) ? "an" : "a"} ${identity.role}`;
  const act = ACTS[right];
  if (scope === "none") return right === "submit" ? `${who} may not submit jobs` : `${who} may not ${act} any job`;
  if (scope === "own") return `${who} may ${act} only its own jobs`;
  return `${who} may ${act} only its own jobs and those of its organisation${identity.org ? ` (org ${identity.org})` : ", and it has none"}`;
}

/* ---- policy files ---- */

const scopeSchema = z.enum(SCOPES, { error: (issue) => `must be one of ${SCOPES.join(", ")}, got ${JSON.stringify(issue.input)}` });

const roleSchema = z.union([
  scopeSchema,
  z.strictObject(Object.fromEntries(RIGHTS.map((right) => [right, scopeSchema.optional()])) as Record<Right, z.ZodOptional<typeof scopeSchema>>, {
    error: (issue) =>
      issue.code === "unrecognized_keys" ? `has no right ${issue.keys.map((key) => JSON.stringify(key)).join(", ")}; the rights are ${RIGHTS.join(", ")}` : `must be a scope (${SCOPES.join(", ")}) or a map of rights to scopes, got ${JSON.stringify(issue.input)}`,
  }),
]);

const documentSchema = z.strictObject(
  {
    /** The format, for later changes; 1 for now. */
    format_version: z.literal(1, { error: (issue) => `must be 1, got ${JSON.stringify(issue.input)}` }).optional(),
    permissions: z
      .strictObject(Object.fromEntries(ADMIN_ROLES.map((role) => [role, roleSchema.optional()])) as Record<AdminRole, z.ZodOptional<typeof roleSchema>>, {
        error: (issue) =>
          issue.code === "unrecognized_keys" ? `has no role ${issue.keys.map((key) => JSON.stringify(key)).join(", ")}; the roles are ${ADMIN_ROLES.join(", ")}` : `must be a map of roles, got ${JSON.stringify(issue.input)}`,
      })
      .default({}),
  },
  {
    error: (issue) =>
      issue.code === "unrecognized_keys"
        ? `unknown key ${issue.keys.map((key) => JSON.stringify(key)).join(", ")}; a policy holds format_version and permissions`
        : `a policy must be a map with permissions, got ${JSON.stringify(issue.input)}`,
  },
);

/**
 * What a policy file holds: overrides of the defaults, per role either one
 * scope for every right or a map of rights to scopes. Roles and rights it does
 * not name keep their defaults.
 *
 * ```yaml
 * format_version: 1
 * permissions:
 *   lead: { manage: org, download: org }
 *   member: none
 * ```
 */
export type PolicyDocument = z.input<typeof documentSchema>;

/** The defaults with `document`'s overrides; errors name the source, the field and the value. */
export function parsePolicy(document: unknown, source = "policy"): Policy {
  const parsed = documentSchema.safeParse(document ?? {});
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      // A union reports each branch; the map branch's message covers both.
      const detail = issue.code === "invalid_union" ? (issue.errors.at(-1)?.[0] ?? issue) : issue;
      const path = [...issue.path, ...(detail === issue ? [] : detail.path)];
      return `${path.length ? `${path.join(".")} ` : ""}${detail.message}`;
    });
    throw new Error(`${source}: ${problems.join("; ")}`);
  }
  const policy = {} as Record<AdminRole, RoleRights>;
  for (const role of ADMIN_ROLES) {
    const override = parsed.data.permissions[role];
    policy[role] = Object.freeze(
      typeof override === "string" ? Object.fromEntries(RIGHTS.map((right) => [right, override])) as Record<Right, Scope> : { ...DEFAULT_POLICY[role], ...definedOnly(override ?? {}) },
    );
  }
  return Object.freeze(policy);
}

function definedOnly(rights: Partial<Record<Right, Scope | undefined>>): Partial<Record<Right, Scope>> {
  return Object.fromEntries(Object.entries(rights).filter(([, scope]) => scope !== undefined));
}

/** Reads a policy file, YAML or JSON (JSON is YAML). */
export async function loadPolicy(path: string): Promise<Policy> {
  return parsePolicy(await readYamlFile(path, `policy file ${path}`), `policy file ${path}`);
}

/** "lead: view any, submit any, manage own, download own" lines, for logs and `campfire site --help`. */
export function describePolicy(policy: Policy): string[] {
  return ADMIN_ROLES.map((role) => `${role}: ${RIGHTS.map((right) => `${right} ${policy[role][right]}`).join(", ")}`);
}
