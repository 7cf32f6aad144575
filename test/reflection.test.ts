import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SiteServer } from "../services/site/site-server.js";
import { startTestSite } from "./helpers/site.js";

const run = promisify(execFile);
const GRPCURL = fileURLToPath(new URL("../.cache/bin/grpcurl", import.meta.url));
const BUF = fileURLToPath(new URL("../node_modules/.bin/buf", import.meta.url));

let server: SiteServer;
let target: string;
beforeAll(async () => {
  server = await startTestSite();
  target = `127.0.0.1:${server.port}`;
});
afterAll(() => server.stop(100));

async function grpcurl(...args: string[]): Promise<string> {
  const { stdout } = await run(GRPCURL, ["-plaintext", ...args], { timeout: 20_000 });
  return stdout;
}

describe("grpcurl, through server reflection", () => {
  it("lists the site's services", async () => {
    const services = (await grpcurl(target, "list")).trim().split("\n");
    expect(services).toEqual(expect.arrayContaining(["campfire.agent.v1.AgentService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]));
  });

  it("describes a service and its methods, with the contract's comments", async () => {
    const description = await grpcurl(target, "describe", "campfire.agent.v1.AgentService");
    expect(description).toContain("rpc Connect ( stream .campfire.agent.v1.ConnectRequest ) returns ( stream .campfire.agent.v1.ConnectResponse );");
    expect(description).toContain("rpc UploadPayload ( stream .campfire.agent.v1.UploadPayloadRequest ) returns ( .campfire.agent.v1.UploadPayloadResponse );");
    expect(description).toContain("Opens the agent's control stream.");
  });

  it("describes messages whose fields come from imported files (grpc-node issue 3018 territory)", async () => {
    const exchange = await grpcurl(target, "describe", "campfire.common.v1.DataExchange");
    expect(exchange).toContain("repeated .campfire.common.v1.Tensor tensors = 2;");
    expect(exchange).toContain(".google.protobuf.Struct meta = 4;");
    const result = await grpcurl(target, "describe", "campfire.agent.v1.TaskResult");
    expect(result).toContain(".campfire.common.v1.ReturnCode return_code = 2;");
  });

  it("calls the health service, overall and per service", async () => {
    expect(JSON.parse(await grpcurl(target, "grpc.health.v1.Health/Check"))).toEqual({ status: "SERVING" });
    expect(JSON.parse(await grpcurl("-d", '{"service":"campfire.agent.v1.AgentService"}', target, "grpc.health.v1.Health/Check"))).toEqual({ status: "SERVING" });
  });

  it("reports a service the site does not serve as NOT_FOUND", async () => {
    const failure = await grpcurl("-d", '{"service":"no.such.Service"}', target, "grpc.health.v1.Health/Check").catch((error: { stderr: string }) => error.stderr);
    expect(failure).toMatch(/NotFound/);
  });
});

describe("buf curl, through server reflection", () => {
  it("lists methods and calls health", async () => {
    const { stdout: methods } = await run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-methods", `http://${target}`], { timeout: 20_000 });
    expect(methods).toContain("campfire.agent.v1.AgentService/Connect");
    const { stdout: health } = await run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", "{}", `http://${target}/grpc.health.v1.Health/Check`], { timeout: 20_000 });
    expect(JSON.parse(health)).toEqual({ status: "SERVING" });
  });

  it("makes an admin call and follows a monitor stream, as docs/grpcurl.md shows", async () => {
    const curl = (method: string, body: string) =>
      run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "-H", "authorization: Bearer ignored-on-an-open-site", "-d", body, `http://${target}/campfire.admin.v1.SessionService/${method}`], { timeout: 20_000 });
    const info = JSON.parse((await curl("GetSystemInfo", "{}")).stdout) as { site: { name: string } };
    expect(info.site.name).toBe("test-site");
    const monitored = await curl("MonitorJob", '{"job_id": "no-such-job"}').catch((error: { stderr: string }) => error.stderr);
    expect(monitored).toMatch(/not_found/i);
  });
});
