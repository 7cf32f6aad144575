import { execFile } from "node:child_process";
import { chown, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { freePort } from "./ports.js";

const run = promisify(execFile);

/** A throwaway PostgreSQL cluster in a temporary folder, on 127.0.0.1 and a free port. */
export interface Postgres {
  /** A new, empty database on the cluster: its URL. */
  database(name: string): Promise<string>;
  stop(): Promise<void>;
}

/** Why there is no PostgreSQL to test against here, or undefined when initdb and pg_ctl are on the PATH. */
export async function postgresMissing(): Promise<string | undefined> {
  try {
    await run("initdb", ["--version"]);
    await run("pg_ctl", ["--version"]);
    return undefined;
  } catch {
    return "PostgreSQL's initdb and pg_ctl are not on the PATH (Debian: apt-get install postgresql)";
  }
}

/**
 * Starts a cluster with trust authentication for the user "campfire". As root
 * it runs the server as the "postgres" user, since PostgreSQL refuses to run
 * as root.
 */
export async function startPostgres(): Promise<Postgres> {
  const dir = await mkdtemp(join(tmpdir(), "campfire-pg-"));
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const { stdout } = await run("id", ["-u", "postgres"]);
    const { stdout: gid } = await run("id", ["-g", "postgres"]);
    await chown(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  const as = (command: string, args: string[]) => (asRoot ? run("runuser", ["-u", "postgres", "--", command, ...args]) : run(command, args));
  const data = join(dir, "data");
  await as("initdb", ["-D", data, "-U", "campfire", "--auth=trust", "-E", "UTF8", "--no-sync"]);
  const port = await freePort();
  await as("pg_ctl", ["-D", data, "-w", "-l", join(dir, "log"), "-o", `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c fsync=off`, "start"]);
  const admin = `postgres://campfire@127.0.0.1:${port}/postgres`;
  return {
    async database(name) {
      const client = new pg.Client({ connectionString: admin });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE "${name}"`);
      } finally {
        await client.end();
      }
      return `postgres://campfire@127.0.0.1:${port}/${name}`;
    },
    async stop() {
      await as("pg_ctl", ["-D", data, "-m", "immediate", "stop"]).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
