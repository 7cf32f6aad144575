import { RE2JS } from "re2js";
import { z } from "zod";
import { readYamlFile } from "../shared/yaml-file.js";

/**
 * The filter configuration of a job's config_fed_client.json /
 * config_fed_server.json, and of an agent's own privacy file. The spec both
 * this and the Python client implement: docs/privacy.md.
 */

const MAX_PATTERN_LENGTH = 1024;
const MAX_PATTERNS = 256;

/**
 * Tensor name patterns: RE2 syntax, matched against the whole name in linear
 * time (re2js here, google-re2 in the Python client), so a job's pattern from
 * a site the client does not trust cannot stall the agent by backtracking.
 */
const patterns = z
  .array(z.string().min(1, "must not be empty").max(MAX_PATTERN_LENGTH, `must be at most ${MAX_PATTERN_LENGTH} characters`))
  .min(1, "must list at least one pattern")
  .max(MAX_PATTERNS, `must list at most ${MAX_PATTERNS} patterns`)
  .superRefine((list, context) => {
    for (const [index, pattern] of list.entries()) {
      try {
        RE2JS.compile(pattern);
      } catch (error) {
        context.addIssue({ code: "custom", path: [index], message: `is not an RE2 regular expression: ${(error as Error).message}` });
      }
    }
  });

const filterArgs = {
  exclude_vars: z.object({ patterns }).strict(),
  include_vars: z.object({ patterns }).strict(),
  clip_l2: z.object({ max_norm: z.number().gt(0, "must be greater than 0").finite(), per_tensor: z.boolean().default(false) }).strict(),
  gaussian_noise: z
    .object({
      stddev: z.number().min(0, "must be 0 or more").finite().optional(),
      noise_multiplier: z.number().min(0, "must be 0 or more").finite().optional(),
      seed: z.number().int("must be an integer").optional(),
    })
    .strict()
    .refine((args) => (args.stddev === undefined) !== (args.noise_multiplier === undefined), { message: "give exactly one of stddev and noise_multiplier" }),
  percentile_sparsify: z
    .object({
      percentile: z.number().min(0, "must be in [0, 100)").lt(100, "must be in [0, 100)").default(90),
      gamma: z.number().gt(0, "must be greater than 0").finite().optional(),
    })
    .strict(),
} as const;

export type FilterName = keyof typeof filterArgs;
export const FILTER_NAMES = Object.keys(filterArgs) as FilterName[];

/** One filter as configured, its args parsed (defaults filled in). */
export type FilterSpec = { [N in FilterName]: { name: N; args: z.output<(typeof filterArgs)[N]> } }[FilterName];

/** One entry of task_data_filters / task_result_filters: the filters, and the tasks they apply to (undefined: every task). */
export interface FilterEntry {
  tasks: string[] | undefined;
  filters: FilterSpec[];
}

export interface FilterConfig {
  taskDataFilters: FilterEntry[];
  taskResultFilters: FilterEntry[];
}

export interface LocalPrivacy extends FilterConfig {
  /** false: a job whose client config names filters is refused. */
  allowJobFilters: boolean;
}

const filterSpec = z
  .object({ name: z.string(), args: z.record(z.string(), z.unknown()).default({}) })
  .strict()
  .transform((spec, context): FilterSpec => {
    if (!(FILTER_NAMES as string[]).includes(spec.name)) {
      context.addIssue({ code: "custom", path: ["name"], message: `${JSON.stringify(spec.name)} is not a filter (${FILTER_NAMES.join(", ")})` });
      return z.NEVER;
    }
    const parsed = filterArgs[spec.name as FilterName].safeParse(spec.args);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) context.addIssue({ ...issue, code: "custom", path: ["args", ...issue.path.map(issuePathKey)], message: issueMessage(issue) });
      return z.NEVER;
    }
    return { name: spec.name, args: parsed.data } as FilterSpec;
  });

const entries = z
  .array(
    z
      .object({
        // An entry for no task is surely a mistake (a mandatory filter that never runs): refused, as "*" says every task.
        tasks: z.array(z.string().min(1, "must not be empty")).min(1, 'must name at least one task, or "*" for every task').optional(),
        filters: z.array(filterSpec),
      })
      .strict(),
  )
  .default([])
  .superRefine((list, context) => {
    // gaussian_noise's noise_multiplier is relative to a clip before it: in this document, not in another's.
    let clipped = false;
    for (const [entry, { filters }] of list.entries()) {
      for (const [index, filter] of filters.entries()) {
        if (filter.name === "clip_l2") clipped = true;
        if (filter.name === "gaussian_noise" && filter.args.noise_multiplier !== undefined && !clipped) {
          context.addIssue({ code: "custom", path: [entry, "filters", index, "args", "noise_multiplier"], message: "needs a clip_l2 before it (the noise is noise_multiplier x its max_norm); give stddev instead, or clip first" });
        }
      }
    }
  });

const filterKeys = { task_data_filters: entries, task_result_filters: entries };

/** The keys a job config may hold besides the filters: anything (the trainer's own settings). */
const jobConfig = z.object(filterKeys).passthrough();
const localConfig = z.object({ ...filterKeys, allow_job_filters: z.boolean().default(true) }).strict();

/** A filter configuration that is not valid; the message names the source, the entry and the field. */
export class FilterConfigError extends Error {
  override name = "FilterConfigError";
}

/** The filters a job config (config_fed_client.json or config_fed_server.json, at `field` of the job) names; throws FilterConfigError naming the field. */
export function parseJobFilters(document: unknown, field: string): FilterConfig {
  const { task_data_filters, task_result_filters } = parseOrThrow(jobConfig, document ?? {}, (path) => (path ? `${field}.${path}` : field));
  return { taskDataFilters: task_data_filters.map(entryOf), taskResultFilters: task_result_filters.map(entryOf) };
}

/** True when a job config names any filter (an agent with allow_job_filters: false refuses it). */
export function namesFilters(config: FilterConfig): boolean {
  return [...config.taskDataFilters, ...config.taskResultFilters].some((entry) => entry.filters.length > 0);
}

/** An agent's own privacy configuration (the parsed document); throws FilterConfigError naming `source` and the field. */
export function parseLocalPrivacy(document: unknown, source = "privacy config"): LocalPrivacy {
  const parsed = parseOrThrow(localConfig, document ?? {}, (path) => `${source}: ${path || "the document"}`);
  return { taskDataFilters: parsed.task_data_filters.map(entryOf), taskResultFilters: parsed.task_result_filters.map(entryOf), allowJobFilters: parsed.allow_job_filters };
}

/** Reads an agent's privacy file, YAML or JSON (`campfire agent --privacy <file>`). */
export async function loadLocalPrivacy(path: string): Promise<LocalPrivacy> {
  const source = `privacy config ${path}`;
  return parseLocalPrivacy(await readYamlFile(path, source), source);
}

function entryOf(entry: { tasks?: string[]; filters: FilterSpec[] }): FilterEntry {
  return { tasks: entry.tasks && !entry.tasks.includes("*") ? entry.tasks : undefined, filters: entry.filters };
}

/** Parses `document`; the error names the first problem's field as `where` puts it (given the path within the document). */
function parseOrThrow<T>(schema: z.ZodType<T>, document: unknown, where: (path: string) => string): T {
  const parsed = schema.safeParse(document);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const path = issue.path.map(issuePathKey).reduce<string>((path, key) => (typeof key === "number" ? `${path}[${key}]` : path ? `${path}.${key}` : key), "");
  throw new FilterConfigError(`${where(path)}: ${issueMessage(issue)}`);
}

function issuePathKey(key: PropertyKey): string | number {
  return typeof key === "number" ? key : String(key);
}

function issueMessage(issue: z.core.$ZodIssue): string {
  if (issue.code === "unrecognized_keys") return `${issue.keys.map((key) => JSON.stringify(key)).join(", ")} is not a field here`;
  return issue.message;
}
