import { readFile } from "node:fs/promises";
import type { Metadata } from "@grpc/grpc-js";
import { Unauthenticated } from "../jobs/errors.js";
import type { Caller } from "../jobs/model.js";

/** Token -> the user it stands for. */
export type TokenMap = ReadonlyMap<string, Caller>;

/** Everyone is this user when the site has no token map. */
export const OPEN_SITE_CALLER: Caller = Object.freeze({ name: "admin", admin: true });

/**
 * Identifies callers by their "authorization: Bearer <token>" metadata.
 * Without a token map every caller, with or without a token, is the admin
 * user "admin": fine on a laptop, not on a shared network. With a map, a
 * missing, malformed or unknown token is refused (UNAUTHENTICATED).
 */
export class Authenticator {
  constructor(private readonly tokens?: TokenMap) {}

  authenticate(metadata: Metadata): Caller {
    if (!this.tokens) return OPEN_SITE_CALLER;
    const values = metadata.get("authorization");
    if (values.length === 0) {
      throw new Unauthenticated("no token: this site requires the metadata 'authorization: Bearer <token>' (campfire --token or CAMPFIRE_TOKEN)");
    }
    const match = /^Bearer\s+(\S+)\s*$/i.exec(String(values[0]));
    if (!match) throw new Unauthenticated("the authorization metadata must read 'Bearer <token>'");
    const caller = this.tokens.get(match[1]!);
    if (!caller) throw new Unauthenticated("the token is not known to this site; ask its operator for a valid one");
    return caller;
  }
}

/**
 * Parses a token map written as "token=user" or "token=user:admin" entries,
 * separated by commas or newlines (the CAMPFIRE_TOKENS format).
 */
export function parseTokens(spec: string): Map<string, Caller> {
  const tokens = new Map<string, Caller>();
  for (const entry of spec.split(/[,\n]/).map((part) => part.trim()).filter(Boolean)) {
    const match = /^([^=\s]+)=([^:\s]+)(:admin)?$/.exec(entry);
    if (!match) throw new Error(`token entry ${JSON.stringify(entry.replace(/=.*/, "=…"))} must read token=user or token=user:admin`);
    tokens.set(match[1]!, { name: match[2]!, admin: match[3] !== undefined });
  }
  if (tokens.size === 0) throw new Error("the token map is empty; give at least one token=user entry");
  return tokens;
}

/** Reads a token map from a file holding "token=user[:admin]" lines (blank lines and # comments are skipped). */
export async function loadTokens(path: string): Promise<Map<string, Caller>> {
  const text = await readFile(path, "utf8");
  return parseTokens(
    text
      .split("\n")
      .filter((line) => !line.trim().startsWith("#"))
      .join("\n"),
  );
}
