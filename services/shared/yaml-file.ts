import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";

/** A YAML (or JSON: JSON is YAML) file's parsed content; an unreadable or malformed file throws an Error naming `source`. */
export async function readYamlFile(path: string, source: string): Promise<unknown> {
  try {
    return parseYaml(await readFile(path, "utf8"));
  } catch (error) {
    throw new Error(`${source}: ${(error as Error).message}`, { cause: error });
  }
}
