import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { RunStatus } from "../../gen/campfire/admin/v1/job.js";
import type { WireBytesObserver } from "../shared/wire-bytes.js";
import type { AgentHub, HubObserver } from "../site/agent-hub.js";
import type { JobManager } from "../site/jobs/manager.js";
import type { JobObserver } from "../site/jobs/records.js";
import { statusName } from "../site/jobs/model.js";

/** Task latencies: from a millisecond (an echo) to half an hour (a training round). */
const TASK_SECONDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800];
/** Payload sizes: 1 KiB to 4 GiB, by factors of 4. */
const UPLOAD_BYTES = Array.from({ length: 12 }, (_, index) => 1024 * 4 ** index);
/** Durable writes (fsync): tens of microseconds to a second. */
const STORE_SECONDS = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1];

const UPLOAD_PATH = "/campfire.agent.v1.AgentService/UploadPayload";

/**
 * The site's Prometheus metrics. It observes the hub (tasks, heartbeat
 * misses), the jobs (store writes) and the wire (bytes, upload sizes) through
 * their observer interfaces, and reads connected agents and jobs by status
 * when scraped; nothing in the core calls prom-client.
 */
export class SiteMetrics implements HubObserver, JobObserver, WireBytesObserver {
  readonly registry = new Registry();
  private readonly dispatched: Counter<"job">;
  private readonly completed: Counter<"job">;
  private readonly failed: Counter<"job">;
  private readonly taskSeconds: Histogram;
  private readonly uploadBytes: Histogram;
  private readonly received: Counter<"service">;
  private readonly sent: Counter<"service">;
  private readonly heartbeatMisses: Counter<"client">;
  private readonly storeSeconds: Histogram<"operation">;
  private hub: AgentHub | undefined;
  private jobs: JobManager | undefined;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    const metrics = this;
    new Gauge({
      name: "campfire_site_agents_connected",
      help: "Agents with an open, welcomed stream to the site.",
      registers,
      collect() {
        this.set(metrics.hub?.agents().filter((agent) => agent.connected).length ?? 0);
      },
    });
    new Gauge({
      name: "campfire_site_jobs",
      help: "Jobs the site holds, by status (SUBMITTED, APPROVED, DISPATCHED, RUNNING, FINISHED:COMPLETED, ...).",
      labelNames: ["status"],
      registers,
      collect() {
        const counts = metrics.jobs?.countByStatus() ?? new Map<RunStatus, number>();
        for (const status of Object.values(RunStatus)) {
          if (typeof status !== "number" || status === RunStatus.RUN_STATUS_UNSPECIFIED || status === RunStatus.UNRECOGNIZED) continue;
          this.set({ status: statusName(status) }, counts.get(status) ?? 0);
        }
      },
    });
    this.dispatched = new Counter({ name: "campfire_site_tasks_dispatched_total", help: "Tasks sent to agents, by job.", labelNames: ["job"], registers });
    this.completed = new Counter({ name: "campfire_site_tasks_completed_total", help: "Tasks whose result the site took (return code OK or EARLY_TERMINATION), by job.", labelNames: ["job"], registers });
    this.failed = new Counter({
      name: "campfire_site_tasks_failed_total",
      help: "Tasks that ended otherwise (an error return code, a refused result, the agent gone, the deadline, an abort), by job.",
      labelNames: ["job"],
      registers,
    });
    this.taskSeconds = new Histogram({ name: "campfire_site_task_duration_seconds", help: "From a task's dispatch to its outcome.", buckets: TASK_SECONDS, registers });
    this.uploadBytes = new Histogram({ name: "campfire_site_upload_size_bytes", help: "Result payloads uploaded in chunks, by the size their header declares.", buckets: UPLOAD_BYTES, registers });
    this.received = new Counter({ name: "campfire_site_received_bytes_total", help: "Bytes of protobuf messages received, by service (agent: the agents' streams and payloads; session: admin calls).", labelNames: ["service"], registers });
    this.sent = new Counter({ name: "campfire_site_sent_bytes_total", help: "Bytes of protobuf messages sent, by service.", labelNames: ["service"], registers });
    this.heartbeatMisses = new Counter({ name: "campfire_site_heartbeat_misses_total", help: "Agents dropped after sending nothing for the heartbeat timeout, by client.", labelNames: ["client"], registers });
    this.storeSeconds = new Histogram({ name: "campfire_site_store_write_seconds", help: "Durable writes of the job store, by operation (create, update, delete).", labelNames: ["operation"], buckets: STORE_SECONDS, registers });
  }

  /** Connected agents and jobs by status are read from these when scraped. */
  watch(hub: AgentHub, jobs: JobManager): void {
    this.hub = hub;
    this.jobs = jobs;
  }

  taskDispatched(jobId: string): void {
    this.dispatched.inc({ job: jobId });
  }

  taskFinished(jobId: string, _clientName: string, completed: boolean, seconds: number): void {
    (completed ? this.completed : this.failed).inc({ job: jobId });
    this.taskSeconds.observe(seconds);
  }

  heartbeatMissed(clientName: string): void {
    this.heartbeatMisses.inc({ client: clientName });
  }

  storeWritten(operation: "create" | "update" | "delete", seconds: number): void {
    this.storeSeconds.observe({ operation }, seconds);
  }

  bytesIn(service: string, bytes: number): void {
    this.received.inc({ service }, bytes);
  }

  bytesOut(service: string, bytes: number): void {
    this.sent.inc({ service }, bytes);
  }

  decoded(method: string, message: unknown): void {
    if (method !== UPLOAD_PATH) return;
    const part = (message as { part?: { $case: string; value: { sizeBytes?: number } } }).part;
    if (part?.$case === "header" && typeof part.value.sizeBytes === "number") this.uploadBytes.observe(part.value.sizeBytes);
  }
}
