import { readdir, readFile, stat } from "node:fs/promises";
import { basename, join, relative, resolve, sep } from "node:path";
import { z } from "zod";
import type { App, AppFile, JobDefinition } from "../../gen/campfire/admin/v1/job.js";
import { ARTIFACT_THRESHOLD_BYTES, type ArtifactSource, fileSource } from "./artifacts.js";
import { InvalidJobDefinition } from "./errors.js";

export const META_FILE = "meta.json";
export const SERVER_CONFIG = "config/config_fed_server.json";
export const CLIENT_CONFIG = "config/config_fed_client.json";

/** meta.json as the reference writes it; other keys are allowed and ignored. */
const MetaJson = z.looseObject({
  name: z.string().optional(),
  deploy_map: z.record(z.string(), z.array(z.string())),
  resource_spec: z.record(z.string(), z.record(z.string(), z.number())).optional(),
  min_clients: z.number().int().nonnegative().optional(),
  mandatory_clients: z.array(z.string()).optional(),
});

/** A job folder read for submission: the definition, and the files it references as artifacts, to upload first. */
export interface JobFolder {
  definition: JobDefinition;
  artifacts: ArtifactSource[];
}

/**
 * Reads an NVFLARE-style job folder into a JobDefinition:
 *
 *   <folder>/meta.json                          name, deploy_map, resource_spec, min_clients, mandatory_clients
 *   <folder>/<app>/config/config_fed_server.json {"workflow": "<name>", "args": {...}} (the app on "server")
 *   <folder>/<app>/config/config_fed_client.json passed to the clients that run the app
 *   <folder>/<app>/**                            other files of the app, sent along
 *
 * Only the apps named in deploy_map are read. Files of `artifactThresholdBytes`
 * or more are not read into the definition: they are hashed (streaming) and
 * referenced as artifacts (AppFile.artifact), to be uploaded before the job.
 * Throws InvalidJobDefinition naming the file and the problem. The site
 * checks the rest.
 */
export async function readJobFolder(folder: string, artifactThresholdBytes = ARTIFACT_THRESHOLD_BYTES): Promise<JobFolder> {
  const root = resolve(folder);
  const meta = parseMeta(await readText(join(root, META_FILE), `${folder} has no ${META_FILE}: a job folder needs one with at least "deploy_map"`), folder);
  const apps: App[] = [];
  const artifacts: ArtifactSource[] = [];
  for (const appName of Object.keys(meta.deploy_map)) apps.push(await readApp(root, appName, folder, artifactThresholdBytes, artifacts));
  const definition: JobDefinition = {
    name: meta.name ?? basename(root),
    deployMap: Object.entries(meta.deploy_map).map(([appName, sites]) => ({ appName, sites })),
    resourceSpec: Object.fromEntries(Object.entries(meta.resource_spec ?? {}).map(([client, resources]) => [client, { resources }])),
    minClients: meta.min_clients ?? 0,
    mandatoryClients: meta.mandatory_clients ?? [],
    apps,
    jobFolderName: basename(root),
    signature: undefined,
  };
  return { definition, artifacts };
}

function parseMeta(text: string, folder: string): z.infer<typeof MetaJson> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new InvalidJobDefinition(`${join(folder, META_FILE)}: not valid JSON: ${(error as Error).message}`);
  }
  const parsed = MetaJson.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  throw new InvalidJobDefinition(`${join(folder, META_FILE)}: ${issue.path.join(".") || "the file"}: ${issue.message}`);
}

async function readApp(root: string, appName: string, folder: string, artifactThresholdBytes: number, artifacts: ArtifactSource[]): Promise<App> {
  const appDir = join(root, appName);
  let entries;
  try {
    entries = await readdir(appDir, { recursive: true, withFileTypes: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    throw new InvalidJobDefinition(`deploy_map in ${join(folder, META_FILE)} names app "${appName}", but ${join(folder, appName)}/ does not exist`);
  }
  const app: App = { name: appName, serverConfig: undefined, clientConfig: undefined, files: [] };
  const files: AppFile[] = [];
  for (const entry of entries) {
    const path = relative(appDir, join(entry.parentPath, entry.name)).split(sep).join("/");
    if (entry.isSymbolicLink()) throw new InvalidJobDefinition(`${join(folder, appName, path)} is a symbolic link; copy the file into the job folder instead`);
    if (!entry.isFile()) continue;
    if (path === SERVER_CONFIG) app.serverConfig = await readConfig(join(appDir, path), `${appName}/${path}`);
    else if (path === CLIENT_CONFIG) app.clientConfig = await readConfig(join(appDir, path), `${appName}/${path}`);
    else if ((await stat(join(appDir, path))).size >= artifactThresholdBytes) {
      const source = await fileSource(`${appName}/${path}`, join(appDir, path));
      artifacts.push(source);
      files.push({ path, content: new Uint8Array(0), artifact: source.ref });
    } else files.push({ path, content: await readFile(join(appDir, path)), artifact: undefined });
  }
  if (!app.serverConfig && !app.clientConfig) {
    throw new InvalidJobDefinition(`app "${appName}" in ${folder} has neither ${SERVER_CONFIG} nor ${CLIENT_CONFIG}; add the one(s) its sites need`);
  }
  app.files = files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return app;
}

async function readConfig(path: string, shown: string): Promise<Record<string, unknown>> {
  let value: unknown;
  try {
    value = JSON.parse(await readFile(path, "utf8"));
  } catch (error) {
    throw new InvalidJobDefinition(`${shown}: not valid JSON: ${(error as Error).message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new InvalidJobDefinition(`${shown}: must hold a JSON object`);
  return value as Record<string, unknown>;
}

async function readText(path: string, missing: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") throw new InvalidJobDefinition(missing);
    throw error;
  }
}
