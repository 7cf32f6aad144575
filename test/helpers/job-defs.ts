import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { JobDefinition } from "../../gen/campfire/admin/v1/job.js";

export interface AppSpec {
  server?: Record<string, unknown>;
  client?: Record<string, unknown>;
  files?: Record<string, string | Buffer>;
}

export interface JobSpec {
  name?: string;
  /** App name -> sites. Default {app: ["@ALL"]}. */
  deployMap?: Record<string, string[]>;
  minClients?: number;
  mandatoryClients?: string[];
  resourceSpec?: Record<string, Record<string, number>>;
  /** App name -> configs and files. Default: one app "app" running broadcast of task "echo". */
  apps?: Record<string, AppSpec>;
}

/** The server config of a broadcast job. */
export function broadcast(args: Record<string, unknown> = { task_name: "echo" }): Record<string, unknown> {
  return { workflow: "broadcast", args };
}

function resolved(spec: JobSpec): Required<JobSpec> {
  return {
    name: spec.name ?? "test-job",
    deployMap: spec.deployMap ?? { app: ["@ALL"] },
    minClients: spec.minClients ?? 0,
    mandatoryClients: spec.mandatoryClients ?? [],
    resourceSpec: spec.resourceSpec ?? {},
    apps: spec.apps ?? { app: { server: broadcast(), client: { lr: 0.1 } } },
  };
}

/** A JobDefinition as the session client would read it from a folder. */
export function jobDefinition(spec: JobSpec = {}): JobDefinition {
  const job = resolved(spec);
  return {
    name: job.name,
    deployMap: Object.entries(job.deployMap).map(([appName, sites]) => ({ appName, sites })),
    resourceSpec: Object.fromEntries(Object.entries(job.resourceSpec).map(([client, resources]) => [client, { resources }])),
    minClients: job.minClients,
    mandatoryClients: job.mandatoryClients,
    apps: Object.entries(job.apps).map(([name, app]) => ({
      name,
      serverConfig: app.server,
      clientConfig: app.client,
      files: Object.entries(app.files ?? {}).map(([path, content]) => ({ path, content: Buffer.from(content), artifact: undefined })),
    })),
    jobFolderName: job.name,
    signature: undefined,
  };
}

/** Writes an NVFLARE-style job folder under `parent` and returns its path. */
export async function writeJobFolder(parent: string, spec: JobSpec = {}): Promise<string> {
  const job = resolved(spec);
  const folder = join(parent, job.name);
  await mkdir(folder, { recursive: true });
  const meta = {
    name: job.name,
    deploy_map: job.deployMap,
    resource_spec: job.resourceSpec,
    min_clients: job.minClients,
    mandatory_clients: job.mandatoryClients,
  };
  await writeFile(join(folder, "meta.json"), JSON.stringify(meta, null, 2));
  for (const [name, app] of Object.entries(job.apps)) {
    const write = async (path: string, content: string | Buffer) => {
      await mkdir(dirname(join(folder, name, path)), { recursive: true });
      await writeFile(join(folder, name, path), content);
    };
    if (app.server) await write("config/config_fed_server.json", JSON.stringify(app.server));
    if (app.client) await write("config/config_fed_client.json", JSON.stringify(app.client));
    for (const [path, content] of Object.entries(app.files ?? {})) await write(path, content);
  }
  return folder;
}
