import { readFile, rename, writeFile } from "node:fs/promises";

/** The revocation list's file name, in the CA folder and in the site's kit. */
export const REVOCATIONS_FILE = "revoked.json";

export interface Revocation {
  /** The revoked certificate's serial number, lower-case hex. */
  serial: string;
  /** Whose certificate it was. */
  name: string;
  revokedAt: string;
  reason: string;
}

/** The revocations recorded in `path`; none when the file does not exist. */
export async function readRevocations(path: string): Promise<Revocation[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
  const document = JSON.parse(text) as { revoked?: unknown };
  if (!Array.isArray(document.revoked)) throw new Error(`${path}: expected {"revoked": [...]}`);
  return document.revoked.map((entry: Partial<Revocation>, index) => {
    if (typeof entry.serial !== "string" || !/^[0-9a-f]+$/i.test(entry.serial)) throw new Error(`${path}: revoked[${index}].serial must be a hex serial number`);
    return { serial: entry.serial.toLowerCase(), name: String(entry.name ?? ""), revokedAt: String(entry.revokedAt ?? ""), reason: String(entry.reason ?? "") };
  });
}

/** Writes the list whole, through a temporary file, so a reader never sees half of it. */
export async function writeRevocations(path: string, revocations: readonly Revocation[]): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`;
  await writeFile(temporary, `${JSON.stringify({ revoked: revocations }, null, 2)}\n`);
  await rename(temporary, path);
}
