import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll } from "vitest";
import { loadKit, type TlsKit } from "../../services/security/kit.js";
import { parseProject, type Project } from "../../services/security/project.js";
import { provision } from "../../services/security/provision.js";

/** The test project: a site on loopback, two clients of two organisations, an admin of each role. */
export const TEST_PROJECT = {
  name: "testproj",
  site: { name: "site", hosts: ["localhost", "127.0.0.1"] },
  clients: [
    { name: "hospital-a", org: "a", resources: { gpu: 2 } },
    { name: "hospital-b", org: "b" },
  ],
  admins: [
    { name: "admin@a.org", org: "a", role: "project_admin" },
    { name: "orgadmin@a.org", org: "a", role: "org_admin" },
    { name: "lead@a.org", org: "a", role: "lead" },
    { name: "lead@b.org", org: "b", role: "lead" },
    { name: "member@b.org", org: "b", role: "member" },
  ],
};

export interface Kits {
  /** The provisioning output folder: <dir>/ca and one kit folder per participant. */
  dir: string;
  project: Project;
  /** The kit folder of a participant. */
  path(name: string): string;
  /** A participant's kit, loaded. */
  load(name: string): Promise<TlsKit>;
}

/**
 * Provisions TEST_PROJECT (or `document`) once for a test file, into a
 * temporary folder removed afterwards. Real certificates from a real CA:
 * what a site and its participants get from `campfire provision`.
 */
export function useKits(document: object = TEST_PROJECT): Kits {
  const kits: Kits = {
    dir: "",
    project: parseProject(document),
    path: (name) => join(kits.dir, name),
    load: (name) => loadKit(join(kits.dir, name)),
  };
  beforeAll(async () => {
    kits.dir = await mkdtemp(join(tmpdir(), "campfire-kits-"));
    await provision(kits.project, kits.dir);
  });
  afterAll(() => rm(kits.dir, { recursive: true, force: true }));
  return kits;
}
