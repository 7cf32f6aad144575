import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { campfire } from "./helpers/cli.js";
import { freePort } from "./helpers/ports.js";
import { tempDir } from "./helpers/job-site.js";

// deploy/kubernetes/ as kubectl renders it, checked for what operators rely on, then validated by a
// real kube-apiserver (server-side dry run with strict field validation, then a real apply).
// The API server is built once by scripts/kube/ensure-kube-apiserver.sh (about 8 minutes on two
// cores, cached under .cache/kube-build); a run that finds none skips that part and says so, or
// builds it first with CAMPFIRE_KUBE_BUILD=1.
const execFileAsync = promisify(execFile);
const CHECKOUT = fileURLToPath(new URL("..", import.meta.url));
const MANIFESTS = join(CHECKOUT, "deploy", "kubernetes");
/** The overlay with two site replicas on PostgreSQL. */
const REPLICAS = join(MANIFESTS, "replicas");
const CHART = join(CHECKOUT, "deploy", "helm", "campfire");
/** The cluster version helm template renders for (a helm built by go install assumes 1.20 otherwise). */
const KUBE_VERSION = "1.36.3";

type Manifest = { kind: string; metadata: { name: string; namespace?: string }; spec?: any };

/** SIGKILLs a process this test started and waits until it is gone. */
async function stopProcess(pid: number): Promise<void> {
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (alive()) process.kill(pid, "SIGKILL");
  for (let waited = 0; alive() && waited < 5_000; waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
}

const succeeds = (command: string, args: string[]) => execFileAsync(command, args).then(() => true, () => false);

async function findApiServer(): Promise<string | undefined> {
  const candidates = [process.env.KUBE_APISERVER, join(CHECKOUT, ".cache", "kube-build", "bin", "kube-apiserver"), join(homedir(), ".cache", "kube-build", "bin", "kube-apiserver")];
  const found = candidates.find((path): path is string => Boolean(path && existsSync(path)));
  if (found || process.env.CAMPFIRE_KUBE_BUILD !== "1") return found;
  await execFileAsync(join(CHECKOUT, "scripts", "kube", "ensure-kube-apiserver.sh"), { maxBuffer: 64 * 1024 * 1024 });
  return candidates[1];
}

async function findHelm(): Promise<string | undefined> {
  if (await succeeds("helm", ["version"])) return "helm";
  const cached = join(CHECKOUT, ".cache", "bin", "helm");
  if (existsSync(cached)) return cached;
  if (process.env.CAMPFIRE_KUBE_BUILD !== "1") return undefined;
  return (await execFileAsync(join(CHECKOUT, "scripts", "kube", "ensure-helm.sh"), { maxBuffer: 64 * 1024 * 1024 })).stdout.trim();
}

const hasKubectl = await succeeds("kubectl", ["version", "--client"]);
const helm = await findHelm();
if (!helm) console.warn("test/deploy-kubernetes.test.ts: the Helm chart's checks skipped, no helm (scripts/kube/ensure-helm.sh installs it into .cache/bin in a few minutes, once; CAMPFIRE_KUBE_BUILD=1 npm test runs it first)");
const apiServer = hasKubectl ? await findApiServer() : undefined;
const hasEtcd = await succeeds("etcd", ["--version"]);
const noApiServer = !hasKubectl
  ? "kubectl is missing"
  : !apiServer
    ? "no kube-apiserver built (scripts/kube/ensure-kube-apiserver.sh builds one in about 8 minutes, once; CAMPFIRE_KUBE_BUILD=1 npm test runs it first)"
    : !hasEtcd
      ? "etcd is missing (apt-get install -y etcd-server, or scripts/kube/ensure-kube-apiserver.sh)"
      : undefined;
if (!hasKubectl) console.warn("test/deploy-kubernetes.test.ts: skipped, kubectl is missing");
else if (noApiServer) console.warn(`test/deploy-kubernetes.test.ts: the API server's dry run skipped, ${noApiServer}`);

let manifests: Manifest[] = [];
let replicated: Manifest[] = [];
let charted: Manifest[] = [];
// YAML 1.1, as Kubernetes reads it (0440 is octal there).
const parseManifests = (text: string) => parseAllDocuments(text, { version: "1.1" }).map((document) => document.toJS() as Manifest).filter(Boolean);
const byKind = (kind: string) => manifests.filter((manifest) => manifest.kind === kind);
const one = (kind: string) => {
  const [found, ...more] = byKind(kind);
  expect(found, kind).toBeDefined();
  expect(more).toEqual([]);
  return found!;
};

beforeAll(async () => {
  if (!hasKubectl) return;
  const rendered = await execFileAsync("kubectl", ["kustomize", MANIFESTS], { maxBuffer: 16 * 1024 * 1024 });
  manifests = parseManifests(rendered.stdout);
  replicated = parseManifests((await execFileAsync("kubectl", ["kustomize", REPLICAS], { maxBuffer: 16 * 1024 * 1024 })).stdout);
  if (helm) charted = parseManifests((await execFileAsync(helm, ["template", "campfire", CHART, "--namespace", "campfire", "--kube-version", KUBE_VERSION], { maxBuffer: 16 * 1024 * 1024 })).stdout);
});

describe.skipIf(!hasKubectl)("deploy/kubernetes, rendered by kubectl kustomize", () => {
  it("renders the site as a StatefulSet with a claim for its store, Services, configuration and a disruption budget", () => {
    expect(manifests.map((manifest) => manifest.kind).sort()).toEqual(["ConfigMap", "Deployment", "Namespace", "PodDisruptionBudget", "Service", "Service", "StatefulSet"]);
    const site = one("StatefulSet");
    expect(site.spec.volumeClaimTemplates[0].metadata.name).toBe("data");
    const container = site.spec.template.spec.containers[0];
    expect(container.volumeMounts).toContainEqual({ name: "data", mountPath: "/var/lib/campfire" });
    const config = one("ConfigMap");
    expect(container.envFrom).toEqual([{ configMapRef: { name: config.metadata.name } }]);
    expect(config.metadata.name).toMatch(/^campfire-site-config-[a-z0-9]+$/);
    expect(site.spec.template.spec.volumes).toContainEqual({ name: "kit", secret: { secretName: "campfire-site-kit", defaultMode: 0o440 } });
    const pdb = one("PodDisruptionBudget");
    expect(pdb.spec.selector.matchLabels).toEqual(site.spec.selector.matchLabels);
    const services = byKind("Service");
    for (const service of services) expect(service.spec.selector).toEqual(site.spec.selector.matchLabels);
    expect(services.find((service) => service.metadata.name === site.spec.serviceName)?.spec.clusterIP).toBe("None");
  });

  it("probes the site with grpc.health.v1 on the plain-text health port, per service name", async () => {
    const container = one("StatefulSet").spec.template.spec.containers[0];
    const config = one("ConfigMap") as unknown as { data: Record<string, string> };
    const healthPort = Number(config.data.CAMPFIRE_HEALTH_LISTEN!.split(":")[1]);
    expect(container.livenessProbe.grpc).toEqual({ port: healthPort, service: "" });
    expect(container.readinessProbe.grpc).toEqual({ port: healthPort, service: "campfire.agent.v1.AgentService" });
    expect(container.startupProbe.grpc).toEqual({ port: healthPort, service: "" });
    // Every name a probe asks for is one the site's health service knows.
    const { AGENT_SERVICE_NAME, SESSION_SERVICE_NAME } = await import("../services/site/index.js");
    for (const probe of [container.livenessProbe, container.readinessProbe, container.startupProbe]) expect(["", AGENT_SERVICE_NAME, SESSION_SERVICE_NAME]).toContain(probe.grpc.service);
  });

  it("runs the trainer's agent as a native sidecar that reaches the site's Service by its certified name", async () => {
    const pod = one("Deployment").spec.template.spec;
    const [agent] = pod.initContainers;
    expect(agent.restartPolicy).toBe("Always");
    expect(agent.args.slice(0, 1)).toEqual(["agent"]);
    const site = agent.env.find((variable: { name: string }) => variable.name === "CAMPFIRE_SITE").value as string;
    const service = byKind("Service").find((candidate) => candidate.metadata.name === "campfire-site")!;
    expect(site).toBe(`${service.metadata.name}.${service.metadata.namespace}.svc:${service.spec.ports[0].port}`);
    const project = await readFile(join(MANIFESTS, "project.yaml"), "utf8");
    expect(project).toContain(`- ${site.split(":")[0]}`);
  });

  it("gives every container resource requests, a restricted security context, and a grace period for the drain", () => {
    for (const workload of [one("StatefulSet"), one("Deployment")]) {
      const pod = workload.spec.template.spec;
      // The drain (--drain-seconds) must end before the kubelet's SIGKILL.
      const config = (one("ConfigMap") as unknown as { data: Record<string, string> }).data;
      const agentEnv = (pod.initContainers?.[0]?.env ?? []) as Array<{ name: string; value: string }>;
      const drainSeconds = Number(workload.kind === "StatefulSet" ? config.CAMPFIRE_DRAIN_SECONDS : agentEnv.find((variable) => variable.name === "CAMPFIRE_DRAIN_SECONDS")?.value);
      expect(drainSeconds, workload.metadata.name).toBeGreaterThan(0);
      expect(pod.terminationGracePeriodSeconds, workload.metadata.name).toBeGreaterThan(drainSeconds);
      expect(pod.securityContext.runAsNonRoot).toBe(true);
      for (const container of [...(pod.initContainers ?? []), ...pod.containers]) {
        expect(container.resources.requests.cpu, container.name).toBeDefined();
        expect(container.resources.requests.memory, container.name).toBeDefined();
        expect(container.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
      }
    }
  });
});

describe.skipIf(!hasKubectl)("deploy/kubernetes/replicas, two site replicas on PostgreSQL", () => {
  const named = (kind: string, name: string) => replicated.find((manifest) => manifest.kind === kind && manifest.metadata.name === name)!;

  it("runs two site replicas on one shared volume and the store in PostgreSQL, readiness on the agent service's health", () => {
    const site = named("StatefulSet", "campfire-site");
    expect(site.spec.replicas).toBe(2);
    expect(site.spec.volumeClaimTemplates).toEqual([]);
    const pod = site.spec.template.spec;
    expect(pod.volumes).toContainEqual({ name: "data", persistentVolumeClaim: { claimName: "campfire-site-shared" } });
    expect(named("PersistentVolumeClaim", "campfire-site-shared").spec.accessModes).toEqual(["ReadWriteMany"]);
    const container = pod.containers[0];
    expect(container.env).toContainEqual({ name: "CAMPFIRE_STORE", valueFrom: { secretKeyRef: { name: "campfire-postgres", key: "url" } } });
    expect(container.readinessProbe.grpc.service).toBe("campfire.agent.v1.AgentService");
    const config = replicated.find((manifest) => manifest.kind === "ConfigMap") as unknown as { data: Record<string, string> };
    expect(Number(config.data.CAMPFIRE_LEASE_SECONDS)).toBeGreaterThan(0);
    expect(config.data.CAMPFIRE_DATA_DIR).toBe(container.volumeMounts.find((mount: { name: string }) => mount.name === "data").mountPath);
    // The database: its Service selects its pods only, the site's Service the site's only.
    const postgres = named("StatefulSet", "campfire-postgres");
    expect(named("Service", "campfire-postgres").spec.selector).toEqual(postgres.spec.selector.matchLabels);
    expect(named("Service", "campfire-site").spec.selector).toEqual(site.spec.selector.matchLabels);
    expect(site.spec.selector.matchLabels).not.toEqual(postgres.spec.selector.matchLabels);
    for (const workload of [site, postgres]) {
      for (const each of workload.spec.template.spec.containers) {
        expect(each.resources.requests.memory, each.name).toBeDefined();
        expect(each.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
      }
    }
  });
});

describe.skipIf(!hasKubectl || !helm)("deploy/helm/campfire, the same deployment as a Helm chart", () => {
  it("passes helm lint", async () => {
    const { stdout } = await execFileAsync(helm!, ["lint", CHART]);
    expect(stdout).toContain("0 chart(s) failed");
  });

  it("renders the pods kustomize renders: containers, probes, resources, security, volumes and grace periods alike", () => {
    expect(charted.map((manifest) => manifest.kind).sort()).toEqual(manifests.filter((manifest) => manifest.kind !== "Namespace").map((manifest) => manifest.kind).sort());
    // Names and labels differ (the release's); what runs does not.
    const pod = (list: Manifest[], kind: string) => {
      const spec = structuredClone(list.find((manifest) => manifest.kind === kind)!.spec.template.spec);
      for (const container of [...(spec.initContainers ?? []), ...spec.containers]) {
        delete container.envFrom;
        container.image = container.image.replace(/^campfire:.*$/, "campfire");
      }
      return spec;
    };
    for (const kind of ["StatefulSet", "Deployment"]) expect(pod(charted, kind), kind).toEqual(pod(manifests, kind));
    const config = (list: Manifest[]) => (list.find((manifest) => manifest.kind === "ConfigMap") as unknown as { data: unknown }).data;
    expect(config(charted)).toEqual(config(manifests));
  });
});

describe.skipIf(Boolean(noApiServer))("deploy/kubernetes, validated by a real kube-apiserver", () => {
  let work: string;
  let kubeconfig: string;
  const kubectl = (...args: string[]) => execFileAsync("kubectl", ["--kubeconfig", kubeconfig, ...args], { maxBuffer: 16 * 1024 * 1024 });

  beforeAll(async () => {
    work = await tempDir("campfire-kube-");
    const ports = await Promise.all([0, 1, 2].map(() => freePort()));
    const started = await execFileAsync(join(CHECKOUT, "scripts", "kube", "run-apiserver.sh"), {
      env: { ...process.env, DIR: join(work, "apiserver"), APISERVER: apiServer, ETCD_PORT: String(ports[0]), ETCD_PEER_PORT: String(ports[1]), API_PORT: String(ports[2]) },
    });
    kubeconfig = started.stdout.match(/^kubeconfig: (.*)$/m)![1]!;
    // As docs/deploy.md says: provision the kits, create the namespace and the kits' Secrets, then apply.
    const provisioned = await campfire(["provision", join(MANIFESTS, "project.yaml"), "--out", join(work, "kits")]);
    expect(provisioned.code, provisioned.stderr).toBe(0);
    await kubectl("apply", "-f", join(MANIFESTS, "namespace.yaml"));
    await kubectl("create", "secret", "generic", "campfire-site-kit", "--namespace", "campfire", `--from-file=${join(work, "kits", "site")}`);
    await kubectl("create", "secret", "generic", "campfire-hospital-a-kit", "--namespace", "campfire", `--from-file=${join(work, "kits", "hospital-a")}`);
  }, 180_000);

  afterAll(async () => {
    if (!work) return;
    // Throwaway servers: SIGKILL, since an API server whose etcd is going away can hang in its graceful shutdown.
    for (const name of ["apiserver", "etcd"]) {
      const pid = Number(await readFile(join(work, "apiserver", `${name}.pid`), "utf8").catch(() => "0"));
      if (pid > 0) await stopProcess(pid);
    }
    await rm(work, { recursive: true, force: true });
  });

  it("accepts every object in a server-side dry run with strict field validation, without a Pod Security warning", async () => {
    const { stdout, stderr } = await kubectl("apply", "--kustomize", MANIFESTS, "--dry-run=server", "--validate=strict");
    for (const object of ["statefulset.apps/campfire-site", "deployment.apps/trainer-hospital-a", "poddisruptionbudget.policy/campfire-site", "service/campfire-site"]) {
      expect(stdout).toMatch(new RegExp(`${object.replace(".", "\\.")} (created|configured|unchanged) \\(server dry run\\)`));
    }
    expect(stderr).not.toMatch(/PodSecurity|Warning/);
  });

  it("accepts the two-replica overlay in the same strict dry run, without a Pod Security warning", async () => {
    const { stdout, stderr } = await kubectl("apply", "--kustomize", REPLICAS, "--dry-run=server", "--validate=strict");
    for (const object of ["statefulset.apps/campfire-site", "statefulset.apps/campfire-postgres", "service/campfire-postgres", "persistentvolumeclaim/campfire-site-shared"]) {
      expect(stdout).toMatch(new RegExp(`${object.replace(".", "\\.")} (created|configured|unchanged) \\(server dry run\\)`));
    }
    expect(stderr).not.toMatch(/PodSecurity|Warning/);
  });

  it("stores them for real, the native sidecar's restartPolicy and the grpc probes intact", async () => {
    await kubectl("apply", "--kustomize", MANIFESTS, "--validate=strict");
    const deployment = JSON.parse((await kubectl("get", "deployment", "trainer-hospital-a", "--namespace", "campfire", "--output", "json")).stdout) as Manifest;
    expect(deployment.spec.template.spec.initContainers[0].restartPolicy).toBe("Always");
    const site = JSON.parse((await kubectl("get", "statefulset", "campfire-site", "--namespace", "campfire", "--output", "json")).stdout) as Manifest;
    expect(site.spec.template.spec.containers[0].readinessProbe.grpc).toEqual({ port: 8081, service: "campfire.agent.v1.AgentService" });
  });

  it.skipIf(!helm)("accepts the Helm chart's rendering in the same strict dry run, then installs it for real (in a namespace of its own)", async () => {
    // Beside the kustomize objects of namespace campfire, as a second release would be.
    await kubectl("create", "namespace", "campfire-helm");
    const path = join(work, "chart.yaml");
    await writeFile(path, (await execFileAsync(helm!, ["template", "campfire", CHART, "--namespace", "campfire-helm", "--kube-version", KUBE_VERSION], { maxBuffer: 16 * 1024 * 1024 })).stdout);
    const { stdout, stderr } = await kubectl("apply", "--filename", path, "--namespace", "campfire-helm", "--dry-run=server", "--validate=strict");
    expect(stdout).toMatch(/statefulset\.apps\/campfire-site created \(server dry run\)/);
    expect(stdout).toMatch(/deployment\.apps\/campfire-trainer-hospital-a created \(server dry run\)/);
    expect(stderr).not.toMatch(/PodSecurity|Warning/);

    await execFileAsync(helm!, ["install", "campfire", CHART, "--kubeconfig", kubeconfig, "--namespace", "campfire-helm"]);
    const status = await execFileAsync(helm!, ["status", "campfire", "--kubeconfig", kubeconfig, "--namespace", "campfire-helm"]);
    expect(status.stdout).toMatch(/STATUS: deployed/);
    const deployment = JSON.parse((await kubectl("get", "deployment", "campfire-trainer-hospital-a", "--namespace", "campfire-helm", "--output", "json")).stdout) as Manifest;
    expect(deployment.spec.template.spec.initContainers[0].restartPolicy).toBe("Always");
    expect(deployment.spec.template.spec.initContainers[0].env[0]).toEqual({ name: "CAMPFIRE_SITE", value: "campfire-site.campfire-helm.svc:7443" });
  });

  it("refuses manifests that break the schema: an unknown field, resource requests of the wrong type", async () => {
    const refusal = async (name: string, edit: (pod: any) => void) => {
      const deployment = structuredClone(one("Deployment"));
      deployment.metadata.name = `refused-${name}`; // a create, not a patch of the stored one
      edit(deployment.spec.template.spec);
      const path = join(work, `${name}.json`);
      await writeFile(path, JSON.stringify(deployment));
      return kubectl("apply", "--filename", path, "--dry-run=server", "--validate=strict").then(
        ({ stdout }) => `accepted: ${stdout}`,
        (error: { stderr: string }) => error.stderr,
      );
    };
    expect(await refusal("unknown-field", (pod) => (pod.initContainers[0].restartPolicyy = "Always"))).toContain('unknown field "spec.template.spec.initContainers[0].restartPolicyy"');
    expect(await refusal("wrong-type", (pod) => (pod.initContainers[0].resources.requests = "lots"))).toMatch(/resources\.requests.*(expected|cannot unmarshal)|(expected|cannot unmarshal).*resources\.requests/);
  });
});
