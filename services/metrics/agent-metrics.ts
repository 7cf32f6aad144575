import { collectDefaultMetrics, Counter, Registry } from "prom-client";
import type { AgentObserver } from "../agent/options.js";

/** An agent's Prometheus metrics (`campfire agent --metrics`), fed through its observer interface. */
export class AgentMetrics implements AgentObserver {
  readonly registry = new Registry();
  private readonly tasks: Counter;
  private readonly results: Counter<"outcome">;
  private readonly received: Counter;
  private readonly sent: Counter;
  private readonly reconnects: Counter;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.tasks = new Counter({ name: "campfire_agent_tasks_received_total", help: "Tasks that reached the agent (refused ones included).", registers });
    this.results = new Counter({
      name: "campfire_agent_results_total",
      help: "Results the trainer submitted, by outcome: accepted (the site acknowledged it) or not_accepted (refused, aborted, timed out, or the agent closed).",
      labelNames: ["outcome"],
      registers,
    });
    this.received = new Counter({ name: "campfire_agent_received_bytes_total", help: "Bytes of protobuf messages received from the site (control stream and payloads).", registers });
    this.sent = new Counter({ name: "campfire_agent_sent_bytes_total", help: "Bytes of protobuf messages sent to the site.", registers });
    this.reconnects = new Counter({ name: "campfire_agent_reconnects_total", help: "Times a stream to the site was welcomed again after an earlier one ended.", registers });
  }

  taskReceived(): void {
    this.tasks.inc();
  }

  resultSettled(accepted: boolean): void {
    this.results.inc({ outcome: accepted ? "accepted" : "not_accepted" });
  }

  bytesIn(_service: string, bytes: number): void {
    this.received.inc(bytes);
  }

  bytesOut(_service: string, bytes: number): void {
    this.sent.inc(bytes);
  }

  reconnected(): void {
    this.reconnects.inc();
  }
}
