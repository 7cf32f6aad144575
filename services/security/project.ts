import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { ADMIN_ROLES, orgNameProblem, participantNameProblem } from "./identity.js";
import { nameProblem } from "../shared/names.js";

/** A check as a zod refinement: the problem functions already name the field and the value. */
const checked = (problem: (field: string, value: string) => string | undefined, field: string) =>
  z.string().superRefine((value, context) => {
    const message = problem(field, value);
    if (message) context.addIssue({ code: "custom", message });
  });

const projectSchema = z
  .object({
    name: checked(orgNameProblem, "name"),
    /** How long certificates issued by this run are valid. */
    valid_days: z.number().int().positive().max(36_500).default(365),
    site: z
      .object({
        name: checked(participantNameProblem, "site.name"),
        org: checked(orgNameProblem, "site.org").optional(),
        hosts: z.array(z.string().min(1)).min(1, "list at least one host name or address agents reach the site by"),
      })
      .strict(),
    clients: z
      .array(
        z
          .object({
            name: checked(nameProblem, "clients[].name"),
            org: checked(orgNameProblem, "clients[].org"),
            /** What the site offers jobs on this client's behalf: it trusts this, not what an agent announces. */
            resources: z.record(z.string(), z.number().nonnegative()).default({}),
          })
          .strict(),
      )
      .default([]),
    admins: z
      .array(
        z
          .object({
            name: checked(participantNameProblem, "admins[].name"),
            org: checked(orgNameProblem, "admins[].org"),
            role: z.enum(ADMIN_ROLES, { message: `admins[].role must be one of ${ADMIN_ROLES.join(", ")}` }),
          })
          .strict(),
      )
      .default([]),
  })
  .strict()
  .superRefine((project, context) => {
    const seen = new Set<string>();
    for (const name of [project.site.name, ...project.clients.map((client) => client.name), ...project.admins.map((admin) => admin.name)]) {
      if (seen.has(name)) context.addIssue({ code: "custom", message: `participant name ${JSON.stringify(name)} appears twice: every site, client and admin needs a name of its own` });
      seen.add(name);
    }
  });

/** A project file as provisioning reads it (see examples/project.yaml). */
export type Project = z.infer<typeof projectSchema>;

/** Reads a project file, YAML or JSON (JSON is YAML). Errors name the file, the field and the value. */
export async function readProject(path: string): Promise<Project> {
  let document: unknown;
  try {
    document = parseYaml(await readFile(path, "utf8"));
  } catch (error) {
    throw new Error(`${path}: ${(error as Error).message}`, { cause: error });
  }
  return parseProject(document, path);
}

export function parseProject(document: unknown, source = "project"): Project {
  const parsed = projectSchema.safeParse(document);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => (issue.path.length && !issue.message.includes(" must ") ? `${issue.path.join(".")}: ${issue.message}` : issue.message));
  throw new Error(`${source}: ${problems.join("; ")}`);
}
