import { readFile } from "node:fs/promises";
import type { Metadata } from "@grpc/grpc-js";
import { PermissionDenied, Unauthenticated } from "../../security/errors.js";
import { ADMIN_ROLES, type AdminRole, describeIdentity, type Identity, isAdminRole, orgNameProblem, participantNameProblem } from "../../security/identity.js";
import type { Peer, SiteTrust } from "../../security/site-trust.js";

/** Token -> the admin it stands for. */
export type TokenMap = ReadonlyMap<string, Identity>;

/** Everyone is this admin on a site with neither tokens nor TLS. */
export const OPEN_SITE_ADMIN: Identity = Object.freeze({ name: "admin", org: "", kind: "admin", role: "project_admin", project: "", via: "open" });

/**
 * A caller proved who it is, but with a site's or client's certificate: the
 * admin API is for admins. Carries the identity, for the audit log.
 */
export class AdminCertificateRequired extends PermissionDenied {
  constructor(
    readonly identity: Identity,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Establishes who an admin caller is, in this order:
 * 1. a bearer token ("authorization: Bearer <token>"), when the call sends one
 *    and the site has a token map: an unknown token is refused;
 * 2. on a TLS site, the caller's client certificate (an admin's: a client's
 *    or site's certificate is PERMISSION_DENIED);
 * 3. on a site with neither tokens nor TLS, every caller is the open
 *    project_admin "admin": fine on a laptop, not on a shared network.
 * Anything else (a token map and no token, TLS and neither token nor
 * certificate) is UNAUTHENTICATED, with what to present.
 */
export class Authenticator {
  constructor(
    private readonly tokens?: TokenMap,
    private readonly trust?: SiteTrust,
  ) {}

  authenticate(metadata: Metadata, peer: Peer): Identity {
    const values = metadata.get("authorization");
    if (this.tokens && values.length > 0) return this.byToken(String(values[0]));
    if (this.trust) return this.byCertificate(this.trust, peer);
    if (this.tokens) throw new Unauthenticated("no token: this site requires the metadata 'authorization: Bearer <token>' (campfire --token or CAMPFIRE_TOKEN)");
    return OPEN_SITE_ADMIN;
  }

  private byToken(value: string): Identity {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(value);
    if (!match) throw new Unauthenticated("the authorization metadata must read 'Bearer <token>'");
    const identity = this.tokens!.get(match[1]!);
    if (!identity) throw new Unauthenticated("the token is not known to this site; ask its operator for a valid one");
    return identity;
  }

  private byCertificate(trust: SiteTrust, peer: Peer): Identity {
    if (peer.tls && !peer.certificate && (!peer.certificateProblem || peer.certificateProblem === "no client certificate")) {
      const token = this.tokens ? ", or a token this site knows ('authorization: Bearer <token>': campfire --token or CAMPFIRE_TOKEN)" : "";
      throw new Unauthenticated(
        `no credentials: present the certificate of your admin kit of project ${trust.project} (campfire --tls-dir <kit>, from campfire provision)${token}`,
      );
    }
    const identity = trust.identify(peer);
    if (identity.kind !== "admin" || !identity.role) {
      throw new AdminCertificateRequired(
        identity,
        `${describeIdentity(identity)} presented a ${identity.kind} certificate: the admin API takes an admin's certificate (${ADMIN_ROLES.join(", ")}); use your admin kit (campfire --tls-dir <kit>)`,
      );
    }
    return identity;
  }
}

/**
 * Parses a token map, entries separated by commas or newlines (the
 * CAMPFIRE_TOKENS format):
 * - `token=user`: a lead;
 * - `token=user:admin`: a project_admin (as before roles);
 * - `token=user:<role>`: project_admin, org_admin, lead or member;
 * - `token=user:<role>:<org>`: of an organisation (what org-scoped rights go by).
 * Errors name the entry, never its token.
 */
export function parseTokens(spec: string): Map<string, Identity> {
  const tokens = new Map<string, Identity>();
  for (const entry of spec.split(/[,\n]/).map((part) => part.trim()).filter(Boolean)) {
    const shown = JSON.stringify(entry.replace(/^[^=]*=/, "…="));
    const match = /^([^=\s]+)=([^:\s]+)(?::([^:\s]+))?(?::([^:\s]+))?$/.exec(entry);
    if (!match) throw new Error(`token entry ${shown} must read token=user, token=user:<role> or token=user:<role>:<org>`);
    const [, token, name, roleText = "lead", org = ""] = match as unknown as [string, string, string, string | undefined, string | undefined];
    const role: AdminRole | undefined = roleText === "admin" ? "project_admin" : isAdminRole(roleText) ? roleText : undefined;
    if (!role) throw new Error(`token entry ${shown}: the role must be one of ${ADMIN_ROLES.join(", ")} (or admin, for project_admin), got ${JSON.stringify(roleText)}`);
    const problem = participantNameProblem("the user", name) ?? (org ? orgNameProblem("the organisation", org) : undefined);
    if (problem) throw new Error(`token entry ${shown}: ${problem}`);
    if (tokens.has(token)) throw new Error(`token entry ${shown}: its token is given twice; every token must stand for one user`);
    tokens.set(token, Object.freeze({ name, org, kind: "admin", role, project: "", via: "token" }));
  }
  if (tokens.size === 0) throw new Error("the token map is empty; give at least one token=user entry");
  return tokens;
}

/** Reads a token map from a file holding one entry (parseTokens' format) per line; blank lines and # comments are skipped. */
export async function loadTokens(path: string): Promise<Map<string, Identity>> {
  const text = await readFile(path, "utf8");
  return parseTokens(
    text
      .split("\n")
      .filter((line) => !line.trim().startsWith("#"))
      .join("\n"),
  );
}
