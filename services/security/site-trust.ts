import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Unauthenticated } from "./errors.js";
import { describeIdentity, type Identity } from "./identity.js";
import { identityOfCertificate } from "./certificates.js";
import { type CertifiedKit, certifyKit, loadKit } from "./kit.js";
import { PARTICIPANTS_FILE } from "./provision.js";
import { type Revocation, REVOCATIONS_FILE, readRevocations } from "./revocations.js";
import { SiteServerCredentials } from "./server-credentials.js";

/** What the transport knows of a caller: where it is and what its TLS handshake proved. */
export interface Peer {
  /** host:port as the transport reports it. */
  address: string;
  /** False on a plain-text connection. */
  tls: boolean;
  /** The client certificate, when the handshake verified it against the project CA (signature chain and dates). */
  certificate?: X509Certificate;
  /** Why no certificate was verified on a TLS connection: none sent, or the TLS stack's verdict ("certificate has expired", ...). */
  certificateProblem?: string;
}

/** A client as the site's kit lists it: the site trusts this, not what an agent announces. */
export interface ClientRecord {
  name: string;
  org: string;
  resources: Record<string, number>;
}

/**
 * The site's trust, from its kit: its own certificate (served over TLS), the
 * project's clients with their organisations and resources, and the revoked
 * certificates. identify() turns a caller's verified certificate into an
 * Identity, or refuses it. reload() re-reads the kit (SIGHUP): renewed
 * certificates, new clients and revocations take effect without a restart.
 */
export class SiteTrust {
  readonly credentials: SiteServerCredentials;
  private readonly reloadListeners = new Set<() => void>();

  private constructor(
    readonly dir: string,
    private kit: CertifiedKit,
    private clients: ReadonlyMap<string, ClientRecord>,
    private revoked: ReadonlyMap<string, Revocation>,
  ) {
    this.credentials = new SiteServerCredentials(kit);
  }

  static async load(dir: string): Promise<SiteTrust> {
    const { kit, clients, revoked } = await readSiteKit(dir);
    return new SiteTrust(dir, kit, clients, revoked);
  }

  /** The site's kit as last loaded: its certificate, key and the project CA. */
  get certifiedKit(): CertifiedKit {
    return this.kit;
  }

  /** The site's own identity (its certificate's). */
  get identity(): Identity {
    return this.kit.identity;
  }

  get project(): string {
    return this.kit.identity.project;
  }

  /** The project CA (the kit's ca.crt): what signed jobs' signers must chain to. */
  get caCertificate(): X509Certificate {
    return new X509Certificate(this.kit.ca);
  }

  /** The site's key and certificate and the project CA, for an HTTPS server (the dashboard) that asks for admins' certificates. */
  get pem(): { key: Buffer; cert: Buffer; ca: Buffer } {
    return { key: this.kit.key, cert: this.kit.cert, ca: this.kit.ca };
  }

  client(name: string): ClientRecord | undefined {
    return this.clients.get(name);
  }

  /** The identity a caller's certificate proves; Unauthenticated, with the reason, when it proves none. */
  identify(peer: Peer): Identity {
    if (!peer.tls) throw new Unauthenticated("this site requires TLS: connect with the project's CA (campfire --tls-dir <kit>)");
    if (!peer.certificate) {
      throw new Unauthenticated(
        `no client certificate of project ${this.project} was verified (${peer.certificateProblem ?? "none sent"}): present the certificate of your kit (--tls-dir <kit>), issued by campfire provision for this project and not expired`,
      );
    }
    let identity: Identity;
    try {
      identity = identityOfCertificate(peer.certificate);
    } catch (error) {
      throw new Unauthenticated((error as Error).message, { cause: error });
    }
    if (identity.project !== this.project) throw new Unauthenticated(`the certificate of ${identity.name} was issued for project ${identity.project}, not ${this.project}`);
    this.checkNotRevoked(identity);
    return identity;
  }

  /** Throws Unauthenticated when the identity's certificate is revoked: for calls, and for streams opened before a reload. */
  checkNotRevoked(identity: Identity): void {
    const revocation = this.revoked.get(identity.serial ?? "");
    if (revocation) {
      throw new Unauthenticated(`the certificate ${identity.serial} of ${describeIdentity(identity)} was revoked on ${revocation.revokedAt}${revocation.reason ? ` (${revocation.reason})` : ""}; ask the project admin for a new kit`);
    }
  }

  /** Calls `listener` after every reload; returns the function that stops it. */
  onReload(listener: () => void): () => void {
    this.reloadListeners.add(listener);
    return () => this.reloadListeners.delete(listener);
  }

  async reload(): Promise<void> {
    const { kit, clients, revoked } = await readSiteKit(this.dir);
    this.kit = kit;
    this.clients = clients;
    this.revoked = revoked;
    this.credentials.reload(kit);
    for (const listener of this.reloadListeners) listener();
  }
}

async function readSiteKit(dir: string) {
  const kit = certifyKit(await loadKit(dir));
  if (kit.identity.kind !== "site") throw new Error(`TLS kit ${dir} belongs to ${describeIdentity(kit.identity)}, not to a site`);
  const revoked = new Map((await readRevocations(join(dir, REVOCATIONS_FILE))).map((revocation) => [revocation.serial, revocation]));
  return { kit, clients: await readClients(join(dir, PARTICIPANTS_FILE)), revoked };
}

async function readClients(path: string): Promise<Map<string, ClientRecord>> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return new Map();
    throw error;
  }
  const document = JSON.parse(text) as { clients?: ClientRecord[] };
  return new Map((document.clients ?? []).map((client) => [client.name, { name: client.name, org: client.org, resources: { ...client.resources } }]));
}
