import { credentials, Metadata } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus, HealthClient } from "../gen/grpc/health/v1/health.js";
import { SiteServer } from "../services/site/index.js";
import { campfire } from "./helpers/cli.js";
import { useKits } from "./helpers/kits.js";

// A TLS site's plain-text health listener (--health-listen): what Kubernetes' grpc probes reach,
// since they speak neither TLS nor present certificates. It must answer health, and only health.
const kits = useKits();
let site: SiteServer;
let probes: HealthClient;

const check = (client: HealthClient, service: string) =>
  new Promise<{ status?: HealthCheckResponse_ServingStatus; code?: number }>((resolve) =>
    client.check({ service }, new Metadata(), { deadline: Date.now() + 5_000 }, (error, response) => resolve(error ? { code: error.code } : { status: response.status })),
  );

beforeAll(async () => {
  site = await SiteServer.start({ address: "127.0.0.1:0", tls: kits.path("site"), healthAddress: "127.0.0.1:0" });
  probes = new HealthClient(`127.0.0.1:${site.healthPort}`, credentials.createInsecure());
});

afterAll(async () => {
  probes?.close();
  await site?.stop();
});

describe("the health probes' listener", () => {
  it("answers grpc.health.v1 in plain text, for the site and per service name", async () => {
    for (const service of ["", "campfire.agent.v1.AgentService", "campfire.admin.v1.SessionService"]) {
      expect(await check(probes, service)).toEqual({ status: HealthCheckResponse_ServingStatus.SERVING });
    }
    expect(await check(probes, "campfire.nope.v1.Nothing")).toEqual({ code: 5 /* NOT_FOUND */ });
  });

  it("serves nothing but health: the session service is UNIMPLEMENTED there, while the TLS port refuses plain text", async () => {
    const { SessionServiceClient } = await import("../gen/campfire/admin/v1/session_service.js");
    const session = new SessionServiceClient(`127.0.0.1:${site.healthPort}`, credentials.createInsecure());
    const code = await new Promise<number | undefined>((resolve) => session.getSystemInfo({}, new Metadata(), { deadline: Date.now() + 5_000 }, (error) => resolve(error?.code)));
    session.close();
    expect(code).toBe(12 /* UNIMPLEMENTED */);
    const plainToTls = new HealthClient(`127.0.0.1:${site.port}`, credentials.createInsecure());
    expect((await check(plainToTls, "")).code).toBe(14 /* UNAVAILABLE */);
    plainToTls.close();
  });

  it("is what campfire health reads in a container's exec probe: exit 0 when SERVING", async () => {
    const result = await campfire(["health", "--site", `127.0.0.1:${site.healthPort}`, "--service", "campfire.admin.v1.SessionService"]);
    expect([result.code, result.stdout.trim()]).toEqual([0, "SERVING"]);
  });

  it("turns NOT_SERVING with the site when it stops", async () => {
    const stopping = await SiteServer.start({ address: "127.0.0.1:0", healthAddress: "127.0.0.1:0" });
    const client = new HealthClient(`127.0.0.1:${stopping.healthPort}`, credentials.createInsecure());
    const watch = client.watch({ service: "" });
    const statuses: HealthCheckResponse_ServingStatus[] = [];
    const notServing = new Promise<void>((resolve) =>
      watch.on("data", (response: { status: HealthCheckResponse_ServingStatus }) => {
        statuses.push(response.status);
        if (response.status === HealthCheckResponse_ServingStatus.NOT_SERVING) resolve();
      }),
    );
    watch.on("error", () => undefined);
    await new Promise((resolve) => watch.once("data", resolve));
    await stopping.stop();
    await notServing;
    watch.cancel();
    client.close();
    expect(statuses).toEqual([HealthCheckResponse_ServingStatus.SERVING, HealthCheckResponse_ServingStatus.NOT_SERVING]);
  });
});
