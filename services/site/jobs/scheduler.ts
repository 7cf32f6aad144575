import type { ResourceRequirement } from "../../../gen/campfire/admin/v1/job.js";
import type { AgentInfo } from "../agent-hub.js";
import { type DeployPlan, SERVER_SITE } from "./model.js";

/** What the scheduler needs to know about a job to decide whether it can start. */
export interface ScheduleRequest {
  plan: DeployPlan;
  minClients: number;
  mandatoryClients: readonly string[];
  resourceSpec: Readonly<Record<string, ResourceRequirement>>;
}

export type ScheduleDecision = { start: true; clients: string[] } | { start: false; reason: string };

/**
 * Decides whether a job can start now, and on which clients. A client is
 * available when one of its agents is connected, it is not held by another
 * running job (an agent runs one task at a time, and the job's end says bye to
 * its agents), and one of its connected agents offers the resources the
 * job's resource_spec asks of it. The job starts when every mandatory client
 * is available and at least min_clients of its deployed clients are (0: all
 * of them; with "@ALL": every connected client, at least one). It then runs
 * on all its available deployed clients.
 */
export function decide(request: ScheduleRequest, agents: readonly AgentInfo[], heldBy: ReadonlyMap<string, string>): ScheduleDecision {
  const connected = new Map<string, AgentInfo[]>();
  for (const agent of agents) {
    if (!agent.connected || agent.clientName === SERVER_SITE) continue;
    connected.set(agent.clientName, [...(connected.get(agent.clientName) ?? []), agent]);
  }
  const deployed = request.plan.allApp ? [...new Set([...request.plan.clientApps.keys(), ...connected.keys()])] : [...request.plan.clientApps.keys()];
  const problems = new Map<string, string>();
  const available: string[] = [];
  for (const client of deployed) {
    const problem = clientProblem(client, connected.get(client), heldBy.get(client), request.resourceSpec[client]?.resources ?? {});
    if (problem) problems.set(client, problem);
    else available.push(client);
  }
  const reasons: string[] = [];
  for (const client of request.mandatoryClients) {
    const problem = problems.get(client) ?? (available.includes(client) ? undefined : "is not connected");
    if (problem) reasons.push(`mandatory client ${client} ${problem}`);
  }
  const needed = request.minClients || (request.plan.allApp ? Math.max(1, connected.size) : deployed.length);
  if (available.length < needed) {
    const others = [...problems].filter(([client]) => !request.mandatoryClients.includes(client)).map(([client, problem]) => `${client} ${problem}`);
    const which = available.length ? ` (${available.join(", ")})` : "";
    reasons.push(`${available.length} of the ${needed} client(s) it needs are available${which}${others.length ? `: ${others.join("; ")}` : ""}`);
  }
  if (reasons.length) return { start: false, reason: reasons.join("; ") };
  return { start: true, clients: available };
}

function clientProblem(client: string, agents: AgentInfo[] | undefined, holder: string | undefined, required: Readonly<Record<string, number>>): string | undefined {
  if (!agents?.length) return "is not connected";
  if (holder) return `is busy with job ${holder}`;
  const wanted = Object.entries(required);
  if (agents.some((agent) => wanted.every(([name, amount]) => (agent.resources[name] ?? 0) >= amount))) return undefined;
  const offered = agents.map((agent) => describe(agent.resources) || "nothing").join(" / ");
  return `offers ${offered}, needs ${describe(required)}`;
}

function describe(resources: Readonly<Record<string, number>>): string {
  return Object.entries(resources)
    .map(([name, amount]) => `${name}=${amount}`)
    .join(",");
}

/** The wait before the next attempt after `attempts` failed ones: doubling from `baseMs`, capped at `capMs`. */
export function retryDelay(attempts: number, baseMs: number, capMs: number): number {
  return Math.min(capMs, baseMs * 2 ** Math.max(0, Math.min(attempts - 1, 30)));
}
