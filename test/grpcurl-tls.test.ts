import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseTokens } from "../services/site/session/auth.js";
import type { SiteServer } from "../services/site/site-server.js";
import { useKits } from "./helpers/kits.js";
import { startTestSite } from "./helpers/site.js";

/**
 * The real grpcurl against a TLS site, as docs/grpcurl.md tells an operator to
 * call it: -cacert alone for health and reflection, an admin's -cert/-key (or a
 * bearer token) for the admin API, and the refusals when neither is presented.
 * scripts/ensure-tools.sh installs grpcurl into .cache/bin.
 */

const GRPCURL = fileURLToPath(new URL("../.cache/bin/grpcurl", import.meta.url));
const missing = !existsSync(GRPCURL);
if (missing) console.warn(`test/grpcurl-tls.test.ts: skipped, ${GRPCURL} is missing (scripts/ensure-tools.sh installs it; npm test runs it)`);

const kits = useKits();
const TOKEN = "s3cret-admin-token";
let site: SiteServer;
let tokenSite: SiteServer;
/** The site's certificate names localhost and 127.0.0.1 (the test project's site.hosts). */
let target: string;
let tokenTarget: string;

beforeAll(async () => {
  if (missing) return;
  site = await startTestSite({ tls: kits.path("site") });
  tokenSite = await startTestSite({ tls: kits.path("site"), tokens: parseTokens(`${TOKEN}=alice:admin`) });
  target = `localhost:${site.port}`;
  tokenTarget = `localhost:${tokenSite.port}`;
});
afterAll(async () => {
  await site?.stop(100);
  await tokenSite?.stop(100);
});

interface Outcome {
  /** grpcurl's exit status: 0, 1 for its own errors, 64 + the gRPC status code when the call failed. */
  code: number;
  stdout: string;
  stderr: string;
}

function grpcurl(...args: string[]): Promise<Outcome> {
  return new Promise((resolve, reject) =>
    execFile(GRPCURL, ["-connect-timeout", "5", ...args], { timeout: 20_000 }, (error, stdout, stderr) => {
      if (error && typeof error.code !== "number") return reject(error);
      resolve({ code: error ? (error.code as number) : 0, stdout, stderr });
    }),
  );
}

/** -cacert, -cert and -key of a participant's kit. */
function kit(name: string, { withCertificate = true } = {}): string[] {
  const dir = kits.path(name);
  return ["-cacert", join(dir, "ca.crt"), ...(withCertificate ? ["-cert", join(dir, `${name}.crt`), "-key", join(dir, `${name}.key`)] : [])];
}

const GET_SYSTEM_INFO = "campfire.admin.v1.SessionService/GetSystemInfo";
const UNAUTHENTICATED = 64 + 16;
const PERMISSION_DENIED = 64 + 7;

describe.skipIf(missing)("grpcurl against a TLS site", () => {
  describe("with -cacert only: health and reflection need no client certificate", () => {
    it("lists the services", async () => {
      const { code, stdout, stderr } = await grpcurl(...kit("admin@a.org", { withCertificate: false }), target, "list");
      expect(stderr).toBe("");
      expect(code).toBe(0);
      expect(stdout.trim().split("\n")).toEqual(
        expect.arrayContaining(["campfire.admin.v1.SessionService", "campfire.agent.v1.AgentService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]),
      );
    });

    it("describes a method and checks health, dialling the site's IP address", async () => {
      const at = `127.0.0.1:${site.port}`;
      const described = await grpcurl(...kit("admin@a.org", { withCertificate: false }), at, "describe", "campfire.admin.v1.SessionService.GetSystemInfo");
      expect(described.stdout).toContain("rpc GetSystemInfo ( .campfire.admin.v1.GetSystemInfoRequest ) returns ( .campfire.admin.v1.GetSystemInfoResponse );");
      const health = await grpcurl(...kit("admin@a.org", { withCertificate: false }), "-d", '{"service":"campfire.admin.v1.SessionService"}', at, "grpc.health.v1.Health/Check");
      expect(JSON.parse(health.stdout)).toEqual({ status: "SERVING" });
    });

    it("fails to dial without -cacert: the site's certificate is signed by the project CA, which the system does not trust", async () => {
      const { code, stderr } = await grpcurl(target, "list");
      expect(code).toBe(1);
      expect(stderr).toMatch(/certificate signed by unknown authority/);
    });
  });

  describe("the admin API", () => {
    it("answers GetSystemInfo over mutual TLS with an admin's kit", async () => {
      const { code, stdout, stderr } = await grpcurl(...kit("admin@a.org"), target, GET_SYSTEM_INFO);
      expect(stderr).toBe("");
      expect(code).toBe(0);
      expect(JSON.parse(stdout)).toMatchObject({ site: { name: "test-site", status: "started" } });
    });

    it("refuses GetSystemInfo without a client certificate: UNAUTHENTICATED", async () => {
      const { code, stdout, stderr } = await grpcurl(...kit("admin@a.org", { withCertificate: false }), target, GET_SYSTEM_INFO);
      expect(stdout).toBe("");
      expect(stderr).toMatch(/Code: Unauthenticated/);
      expect(code).toBe(UNAUTHENTICATED);
    });

    it("refuses GetSystemInfo with a client's certificate: PERMISSION_DENIED, naming it", async () => {
      const { code, stderr } = await grpcurl(...kit("hospital-a"), target, GET_SYSTEM_INFO);
      expect(stderr).toMatch(/Code: PermissionDenied/);
      expect(stderr).toMatch(/Message: .*hospital-a/);
      expect(code).toBe(PERMISSION_DENIED);
    });

    it("takes a bearer token over TLS (-cacert and -H), and refuses an unknown one", async () => {
      const ok = await grpcurl(...kit("admin@a.org", { withCertificate: false }), "-H", `authorization: Bearer ${TOKEN}`, tokenTarget, GET_SYSTEM_INFO);
      expect(ok.stderr).toBe("");
      expect(JSON.parse(ok.stdout)).toMatchObject({ site: { name: "test-site" } });
      const wrong = await grpcurl(...kit("admin@a.org", { withCertificate: false }), "-H", "authorization: Bearer not-the-token", tokenTarget, GET_SYSTEM_INFO);
      expect(wrong.stderr).toMatch(/Code: Unauthenticated\n\s*Message: the token is not known to this site/);
      expect(wrong.code).toBe(UNAUTHENTICATED);
    });

    it("on a site with tokens, still takes an admin's certificate from a call without a token", async () => {
      const { code, stdout, stderr } = await grpcurl(...kit("admin@a.org"), tokenTarget, GET_SYSTEM_INFO);
      expect(stderr).toBe("");
      expect(code).toBe(0);
      expect(JSON.parse(stdout)).toMatchObject({ site: { name: "test-site" } });
    });
  });

  it("refuses an agent call without a client certificate: UNAUTHENTICATED, saying what to present", async () => {
    const { code, stderr } = await grpcurl(...kit("admin@a.org", { withCertificate: false }), "-d", '{"payload_id":"p"}', target, "campfire.agent.v1.AgentService/DownloadPayload");
    expect(stderr).toMatch(/Code: Unauthenticated\n\s*Message: no client certificate of project testproj was verified/);
    expect(code).toBe(UNAUTHENTICATED);
  });
});
