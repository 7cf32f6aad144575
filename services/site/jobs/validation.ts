import { type App, type AppDeployment, type AppFile, JobDefinition } from "../../../gen/campfire/admin/v1/job.js";
import { sha256Problem } from "../artifacts/store.js";
import { nameProblem } from "../../shared/names.js";
import { FilterConfigError, type FilterConfig } from "../../privacy/config.js";
import { parseServerFilters } from "../../privacy/site-filters.js";
import type { WorkflowRegistry } from "../workflows/registry.js";
import type { Workflow } from "../workflows/workflow.js";
import { InvalidJobDefinition, JobTooLarge } from "./errors.js";
import { ALL_SITES, type DeployPlan, SERVER_SITE } from "./model.js";

/** A definition that passed every rule, with what the runner needs from it. */
export interface ValidatedJob {
  definition: JobDefinition;
  /** The definition's protobuf encoding, as the store keeps it. */
  encoded: Uint8Array;
  plan: DeployPlan;
  workflow: Workflow;
  /** The workflow's arguments, as its validateArgs returned them. */
  args: unknown;
  /** The client config of each app, by app name. */
  clientConfigs: ReadonlyMap<string, Record<string, unknown>>;
  /** The files of the server's app (inline, or referencing stored artifacts). */
  serverFiles: readonly AppFile[];
  /** The filters of the server app's config (task_result_filters run on each incoming result). */
  serverFilters: FilterConfig;
}

const MAX_NAME_LENGTH = 256;
const q = (value: unknown) => JSON.stringify(value);

/** The longest job (its encoded definition) a site accepts unless configured otherwise. */
export const DEFAULT_MAX_JOB_BYTES = 16 * 1024 * 1024;

/**
 * Checks a job definition against the reference rules and the site's
 * workflows. Throws InvalidJobDefinition naming the field and the value of the
 * first problem found, or JobTooLarge past `maxJobBytes`.
 */
export function validateJob(definition: JobDefinition, workflows: WorkflowRegistry, maxJobBytes: number): ValidatedJob {
  const encoded = JobDefinition.encode(definition).finish();
  if (encoded.byteLength > maxJobBytes) {
    throw new JobTooLarge(
      `the job is ${mib(encoded.byteLength)}, more than this site accepts (${mib(maxJobBytes)}, set with campfire site --max-job-mb): ` +
        "upload large app files as artifacts (UploadArtifact; campfire submit does), keep configs small, and let the clients load their data locally",
    );
  }
  checkName(definition);
  const apps = checkApps(definition);
  const plan = checkDeployMap(definition, apps);
  checkClients(definition, plan);
  const serverApp = apps.get(plan.serverApp)!;
  const { workflow, args, serverFilters } = checkServerConfig(serverApp.app, serverApp.index, workflows);
  const clientConfigs = new Map([...apps].map(([name, { app }]) => [name, app.clientConfig ?? {}]));
  const serverFiles = serverApp.app.files;
  return { definition, encoded, plan, workflow, args, clientConfigs, serverFiles, serverFilters };
}

/** The deploy plan of a deploy map already validated (for example a stored job's). */
export function deployPlanOf(deployMap: readonly AppDeployment[]): DeployPlan {
  let serverApp = "";
  let allApp: string | undefined;
  const clientApps = new Map<string, string>();
  for (const { appName, sites } of deployMap) {
    for (const site of sites) {
      if (site === ALL_SITES) {
        allApp = appName;
        serverApp = appName;
      } else if (site === SERVER_SITE) serverApp = appName;
      else clientApps.set(site, appName);
    }
  }
  return { serverApp, clientApps, allApp };
}

function checkName(definition: JobDefinition): void {
  const name = definition.name;
  if (!name.trim()) throw new InvalidJobDefinition('name: is empty; give the job a name in meta.json ("name": "...")');
  if (name.length > MAX_NAME_LENGTH) throw new InvalidJobDefinition(`name: ${name.length} characters, at most ${MAX_NAME_LENGTH} allowed`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) throw new InvalidJobDefinition(`name: ${q(name)} contains control characters`);
}

function checkApps(definition: JobDefinition): Map<string, { app: App; index: number }> {
  const apps = new Map<string, { app: App; index: number }>();
  for (const [index, app] of definition.apps.entries()) {
    const field = `apps[${index}]`;
    const problem = nameProblem(`${field}.name`, app.name);
    if (problem) throw new InvalidJobDefinition(problem);
    if (apps.has(app.name)) throw new InvalidJobDefinition(`${field}.name: ${q(app.name)} appears twice; app names must be unique`);
    const paths = new Set<string>();
    for (const [fileIndex, file] of app.files.entries()) {
      const pathProblem = relativePathProblem(file.path);
      if (pathProblem) throw new InvalidJobDefinition(`${field}.files[${fileIndex}].path: ${q(file.path)} ${pathProblem}`);
      if (paths.has(file.path)) throw new InvalidJobDefinition(`${field}.files[${fileIndex}].path: ${q(file.path)} appears twice in app ${q(app.name)}`);
      paths.add(file.path);
      if (file.artifact) checkArtifactRef(file, `${field}.files[${fileIndex}]`);
    }
    apps.set(app.name, { app, index });
  }
  return apps;
}

function checkArtifactRef(file: AppFile, field: string): void {
  const problem = sha256Problem(file.artifact!.sha256);
  if (problem) throw new InvalidJobDefinition(`${field}.artifact.sha256: ${problem}`);
  if (!(file.artifact!.sizeBytes > 0)) throw new InvalidJobDefinition(`${field}.artifact.size_bytes: ${file.artifact!.sizeBytes} must be at least 1`);
  if (file.content.length > 0) {
    throw new InvalidJobDefinition(`${field}.content: ${file.content.length} bytes beside an artifact reference; a file is either inline (content) or uploaded (artifact), not both`);
  }
}

/** The files of a definition that reference artifacts, with the field that names each. */
export function artifactRefsOf(definition: JobDefinition): Array<{ field: string; path: string; sha256: string; sizeBytes: number }> {
  return definition.apps.flatMap((app, appIndex) =>
    app.files.flatMap((file, fileIndex) => (file.artifact ? [{ field: `apps[${appIndex}].files[${fileIndex}].artifact`, path: file.path, ...file.artifact }] : [])),
  );
}

function checkDeployMap(definition: JobDefinition, apps: ReadonlyMap<string, unknown>): DeployPlan {
  const deployMap = definition.deployMap;
  if (deployMap.length === 0) {
    throw new InvalidJobDefinition('deploy_map: is empty; deploy one app to "server" and to the clients, for example {"app": ["@ALL"]}');
  }
  const appOfSite = new Map<string, { app: string; index: number }>();
  const deployedApps = new Set<string>();
  for (const [index, { appName, sites }] of deployMap.entries()) {
    const field = `deploy_map[${index}]`;
    if (!apps.has(appName)) {
      throw new InvalidJobDefinition(`${field}.app_name: ${q(appName)} names no app of the job; its apps are ${[...apps.keys()].map(q).join(", ") || "none"}`);
    }
    if (deployedApps.has(appName)) throw new InvalidJobDefinition(`${field}.app_name: ${q(appName)} appears twice in deploy_map; list all its sites in one entry`);
    deployedApps.add(appName);
    if (sites.length === 0) throw new InvalidJobDefinition(`${field}.sites: empty for app ${q(appName)}; name its sites or remove the entry`);
    if (sites.includes(ALL_SITES) && sites.length > 1) {
      throw new InvalidJobDefinition(`${field}.sites: ${q(sites)}: "@ALL" must be the only entry of its list`);
    }
    for (const site of sites) {
      if (site !== ALL_SITES) {
        const problem = nameProblem(`${field}.sites`, site);
        if (problem) throw new InvalidJobDefinition(problem);
      }
      const earlier = appOfSite.get(site) ?? (site !== ALL_SITES ? appOfSite.get(ALL_SITES) : appOfSite.values().next().value);
      if (earlier) {
        const who = site === ALL_SITES ? '"@ALL" (every site)' : q(site);
        throw new InvalidJobDefinition(
          `${field}.sites: ${who} would run app ${q(appName)} but already runs app ${q(earlier.app)} (deploy_map[${earlier.index}]); each site gets exactly one app`,
        );
      }
      appOfSite.set(site, { app: appName, index });
    }
  }
  const unused = [...apps.keys()].find((app) => !deployedApps.has(app));
  if (unused !== undefined) throw new InvalidJobDefinition(`apps: app ${q(unused)} is not in deploy_map; deploy it or leave it out of the job`);
  const plan = deployPlanOf(deployMap);
  if (!plan.serverApp) {
    throw new InvalidJobDefinition('deploy_map: "server" is not deployed; add "server" to the sites of the app whose config_fed_server.json runs the job (or use "@ALL")');
  }
  if (!plan.allApp && plan.clientApps.size === 0) {
    throw new InvalidJobDefinition('deploy_map: deploys no client; add the clients to an app\'s sites (or use "@ALL")');
  }
  return plan;
}

function checkClients(definition: JobDefinition, plan: DeployPlan): void {
  const deployed = [...plan.clientApps.keys()];
  if (!plan.allApp && definition.minClients > deployed.length) {
    throw new InvalidJobDefinition(
      `min_clients: ${definition.minClients} is more than the ${deployed.length} deployed client(s) (${deployed.join(", ")}); use at most ${deployed.length}, or 0 for all`,
    );
  }
  for (const [index, client] of definition.mandatoryClients.entries()) {
    const field = `mandatory_clients[${index}]`;
    if (client === SERVER_SITE) throw new InvalidJobDefinition(`${field}: "server" is the site itself, not a client; remove it`);
    const problem = nameProblem(field, client);
    if (problem) throw new InvalidJobDefinition(problem);
    if (!plan.allApp && !plan.clientApps.has(client)) {
      throw new InvalidJobDefinition(`${field}: ${q(client)} is not in deploy_map; deploy an app to it or drop it from mandatory_clients`);
    }
  }
  for (const [client, requirement] of Object.entries(definition.resourceSpec)) {
    const field = `resource_spec[${q(client)}]`;
    const problem = nameProblem("resource_spec", client);
    if (problem) throw new InvalidJobDefinition(problem);
    if (!plan.allApp && !plan.clientApps.has(client)) {
      throw new InvalidJobDefinition(`${field}: ${q(client)} is not in deploy_map; resources can only be required of deployed clients`);
    }
    for (const [resource, amount] of Object.entries(requirement.resources)) {
      if (!Number.isFinite(amount) || amount < 0) throw new InvalidJobDefinition(`${field}.${resource}: ${amount} must be a non-negative number`);
    }
  }
}

function checkServerConfig(app: App, index: number, workflows: WorkflowRegistry): { workflow: Workflow; args: unknown; serverFilters: FilterConfig } {
  const field = `apps[${index}].server_config`;
  const known = `this site knows: ${workflows.names().join(", ")}`;
  const config = app.serverConfig;
  if (!config) {
    throw new InvalidJobDefinition(
      `${field}: app ${q(app.name)} runs on "server" but has no config/config_fed_server.json; add one naming the workflow, for example {"workflow": "broadcast", "args": {...}} (${known})`,
    );
  }
  const name: unknown = config.workflow;
  if (typeof name !== "string") throw new InvalidJobDefinition(`${field}.workflow: ${q(name ?? null)} is not a workflow name (${known})`);
  const workflow = workflows.get(name);
  if (!workflow) throw new InvalidJobDefinition(`${field}.workflow: ${q(name)} is not a workflow this site knows (${known})`);
  const raw: unknown = config.args ?? {};
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw new InvalidJobDefinition(`${field}.args: ${q(raw)} must be an object`);
  let args: unknown;
  try {
    args = workflow.validateArgs(raw as Record<string, unknown>);
  } catch (error) {
    throw new InvalidJobDefinition(`${field}.args.${(error as Error).message}`);
  }
  try {
    const serverFilters = parseServerFilters(config, field);
    if (serverFilters.taskResultFilters.length && workflow.refusesSiteResultFilters) {
      throw new InvalidJobDefinition(`${field}.task_result_filters: ${workflow.name} takes none: ${workflow.refusesSiteResultFilters}`);
    }
    return { workflow, args, serverFilters };
  } catch (error) {
    if (error instanceof FilterConfigError) throw new InvalidJobDefinition(error.message);
    throw error;
  }
}

/** Why `path` is not a safe relative path ('/' separators, no '..', not absolute), or undefined. */
export function relativePathProblem(path: string): string | undefined {
  if (!path) return "is empty";
  if (path.startsWith("/") || /^[A-Za-z]:/.test(path)) return "must be relative to the app folder";
  if (path.includes("\\")) return "must use '/' separators";
  if (path.split("/").some((part) => part === ".." || part === "." || part === "")) return "must not contain '..', '.' or empty segments";
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f]/.test(path)) return "contains control characters";
  return undefined;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
