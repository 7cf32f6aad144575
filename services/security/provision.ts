import { X509Certificate } from "node:crypto";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type CertifiedKey, createCertificateAuthority, issueCertificate, type ParticipantSubject, validFor } from "./certificates.js";
import type { CertificateRole } from "./identity.js";
import { kitReadme } from "./kit-readme.js";
import type { Project } from "./project.js";
import { type Revocation, REVOCATIONS_FILE, readRevocations, writeRevocations } from "./revocations.js";

/** Where the CA's key lives: beside the kits, never inside one. */
export const CA_DIR = "ca";
/** The site kit's list of clients, their organisations and the resources the site offers on their behalf. */
export const PARTICIPANTS_FILE = "participants.json";
/** The CA folder's record of what it issued, so a re-run issues only what is new. */
const ISSUED_FILE = "issued.json";

export interface IssuedRecord {
  name: string;
  org: string;
  role: CertificateRole;
  serial: string;
  notAfter: string;
}

export interface ProvisionOptions {
  /** Issue these participants afresh (new key, new serial) even though they have a kit: rotation. */
  renew?: readonly string[];
  now?: Date;
}

export interface ProvisionReport {
  createdCa: boolean;
  issued: IssuedRecord[];
  kept: string[];
}

/**
 * Writes the project's CA (once) and a kit per participant that has none:
 * `<out>/<name>/` with ca.crt, <name>.crt, <name>.key (0600) and a README.
 * Re-running with more participants adds their kits and leaves the others'
 * certificates alone; `renew` re-issues the named ones.
 */
export async function provision(project: Project, out: string, options: ProvisionOptions = {}): Promise<ProvisionReport> {
  const now = options.now ?? new Date();
  const caDir = join(out, CA_DIR);
  await mkdir(caDir, { recursive: true, mode: 0o700 });
  const existing = await readCa(caDir);
  if (existing && !existing.project.startsWith(`CN=${project.name} CA`)) {
    throw new Error(`${caDir} holds the CA of another project (${existing.project.replaceAll("\n", ", ")}), not of ${JSON.stringify(project.name)}: use another --out`);
  }
  const ca = existing?.ca ?? (await createCertificateAuthority(project.name, validFor(Math.max(project.valid_days, 3650), now)));
  if (!existing) {
    await writeSecret(join(caDir, "ca.key"), ca.keyPem);
    await writeFile(join(caDir, "ca.crt"), ca.certPem);
  }
  const issued = await readIssued(caDir);
  const renew = new Set(options.renew ?? []);
  const participants = participantsOf(project);
  for (const name of renew) {
    if (!participants.some((participant) => participant.name === name)) throw new Error(`--renew ${name}: no participant of that name in the project file`);
  }
  const report: ProvisionReport = { createdCa: !existing, issued: [], kept: [] };
  for (const participant of participants) {
    const kitDir = join(out, participant.name);
    if (issued.has(participant.name) && !renew.has(participant.name) && (await exists(join(kitDir, `${participant.name}.crt`)))) {
      report.kept.push(participant.name);
      continue;
    }
    const certified = await issueCertificate(ca, project.name, participant, validFor(project.valid_days, now));
    await mkdir(kitDir, { recursive: true, mode: 0o700 });
    await writeFile(join(kitDir, "ca.crt"), ca.certPem);
    await writeFile(join(kitDir, `${participant.name}.crt`), certified.certPem);
    await writeSecret(join(kitDir, `${participant.name}.key`), certified.keyPem);
    await writeFile(join(kitDir, "README.md"), kitReadme(project, participant));
    const record = { name: participant.name, org: participant.org, role: participant.role, serial: certified.serial, notAfter: new X509Certificate(certified.certPem).validTo };
    issued.set(participant.name, record);
    report.issued.push(record);
  }
  await writeFile(join(caDir, ISSUED_FILE), `${JSON.stringify([...issued.values()], null, 2)}\n`);
  const siteDir = join(out, project.site.name);
  const clients = project.clients.map(({ name, org, resources }) => ({ name, org, resources }));
  await writeFile(join(siteDir, PARTICIPANTS_FILE), `${JSON.stringify({ project: project.name, clients }, null, 2)}\n`);
  // The site kit carries the project's revocations, so the site honours them wherever the kit is copied.
  await writeRevocations(join(siteDir, REVOCATIONS_FILE), await readRevocations(join(caDir, REVOCATIONS_FILE)));
  return report;
}

/**
 * Records that `name`'s current certificate is revoked, in the CA folder and
 * the site kit; the site refuses it from its next start or reload (SIGHUP).
 */
export async function revoke(project: Project, out: string, name: string, reason: string, now = new Date()): Promise<Revocation> {
  const caDir = join(out, CA_DIR);
  const record = (await readIssued(caDir)).get(name);
  if (!record) throw new Error(`--revoke ${name}: ${caDir} issued no certificate of that name`);
  const revocations = await readRevocations(join(caDir, REVOCATIONS_FILE));
  const revocation = revocations.find((entry) => entry.serial === record.serial) ?? { serial: record.serial, name, revokedAt: now.toISOString(), reason };
  if (!revocations.includes(revocation)) revocations.push(revocation);
  await writeRevocations(join(caDir, REVOCATIONS_FILE), revocations);
  await writeRevocations(join(out, project.site.name, REVOCATIONS_FILE), revocations);
  return revocation;
}

function participantsOf(project: Project): ParticipantSubject[] {
  return [
    { name: project.site.name, org: project.site.org ?? project.name, role: "site", hosts: project.site.hosts },
    ...project.clients.map(({ name, org }) => ({ name, org, role: "client" as const })),
    ...project.admins.map(({ name, org, role }) => ({ name, org, role })),
  ];
}

async function readCa(caDir: string): Promise<{ ca: CertifiedKey; project: string } | undefined> {
  try {
    const [certPem, keyPem] = await Promise.all([readFile(join(caDir, "ca.crt"), "utf8"), readFile(join(caDir, "ca.key"), "utf8")]);
    return { ca: { certPem, keyPem }, project: new X509Certificate(certPem).subject };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

async function readIssued(caDir: string): Promise<Map<string, IssuedRecord>> {
  try {
    const records = JSON.parse(await readFile(join(caDir, ISSUED_FILE), "utf8")) as IssuedRecord[];
    return new Map(records.map((record) => [record.name, record]));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return new Map();
    throw error;
  }
}

async function writeSecret(path: string, content: string): Promise<void> {
  await writeFile(path, content, { mode: 0o600 });
  await chmod(path, 0o600); // an existing file keeps its mode through writeFile
}

async function exists(path: string): Promise<boolean> {
  return readFile(path).then(
    () => true,
    () => false,
  );
}
