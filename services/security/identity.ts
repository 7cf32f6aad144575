/**
 * Who a peer is, as its certificate (or the site's token map) says. Every
 * decision about what a caller may do starts from one of these, never from
 * what the caller claims in a message.
 */

/** The admin roles, strongest first (NVFLARE's): what each may do is authorization.ts's business. */
export const ADMIN_ROLES = ["project_admin", "org_admin", "lead", "member"] as const;
export type AdminRole = (typeof ADMIN_ROLES)[number];

/** What a certificate's subject OU holds: the participant's kind for sites and clients, the role for admins. */
export type CertificateRole = "site" | "client" | AdminRole;

export type ParticipantKind = "site" | "client" | "admin";

export interface Identity {
  /** The participant's name: the site's name, the client name of deploy maps, or the admin's (an e-mail address, say). */
  name: string;
  /** The organisation the participant belongs to. */
  org: string;
  kind: ParticipantKind;
  /** Admins only: the role their certificate (or token) grants. */
  role?: AdminRole;
  /** The project the certificate was issued for (empty for tokens). */
  project: string;
  /** How the identity was established. */
  via: "certificate" | "token" | "open";
  /** The certificate's serial number, hex, when via is "certificate". */
  serial?: string;
}

export function isAdminRole(value: string): value is AdminRole {
  return (ADMIN_ROLES as readonly string[]).includes(value);
}

export function kindOfRole(role: CertificateRole): ParticipantKind {
  return role === "site" || role === "client" ? role : "admin";
}

/** Participant names end up in subjects, file names and logs: letters, digits, '.', '_', '-' and '@' (for e-mail-like admin names). */
const PARTICIPANT_NAME = /^[A-Za-z0-9._@-]{1,128}$/;
/** Organisation names: the same, without '@'. */
const ORG_NAME = /^[A-Za-z0-9._-]{1,64}$/;

/** A message naming the field and value when `value` is not a valid participant name. */
export function participantNameProblem(field: string, value: string): string | undefined {
  if (PARTICIPANT_NAME.test(value) && value !== "ca" && !value.startsWith(".")) return undefined;
  return `${field} must be 1 to 128 characters of letters, digits, '.', '_', '-' and '@', not start with '.' and not be "ca", got ${JSON.stringify(value)}`;
}

export function orgNameProblem(field: string, value: string): string | undefined {
  if (ORG_NAME.test(value)) return undefined;
  return `${field} must be 1 to 64 characters of letters, digits, '.', '_' and '-', got ${JSON.stringify(value)}`;
}

/** "alice@a.org (org a, lead)" for messages and logs. */
export function describeIdentity(identity: Identity): string {
  const role = identity.role ?? identity.kind;
  return `${identity.name} (org ${identity.org || "none"}, ${role})`;
}

/** A participant known only by the name it gave, on a site without TLS: every local process is trusted as what it says. */
export function claimedIdentity(name: string, kind: ParticipantKind): Identity {
  return { name, org: "", kind, project: "", via: "open" };
}
