import type { z } from "zod";

/**
 * Parses a workflow's arguments with `schema`. Throws an Error whose message
 * names the first bad field and its value, as validateArgs must.
 */
export function parseArgs<T>(schema: z.ZodType<T>, raw: Record<string, unknown>): T {
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const path = issue.path.map(String);
  if (issue.code === "unrecognized_keys") return fail([...path, issue.keys[0]].join(".") + ": is not an argument of this workflow");
  const field = path.join(".");
  let value: unknown = raw;
  for (const key of path) value = value !== null && typeof value === "object" ? (value as Record<string, unknown>)[key] : undefined;
  return fail(`${field}: ${issue.message}, got ${value === undefined ? "nothing" : JSON.stringify(value)}`);
}

function fail(message: string): never {
  throw new Error(message);
}
