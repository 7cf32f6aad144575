import type { Logger } from "../../shared/logger.js";
import { carriesData } from "../../shared/return-codes.js";
import type { AgentHub, TaskSpec } from "../agent-hub.js";
import { failureOf, type TaskOutcome } from "../agent-session.js";
import { SiteError } from "../errors.js";

export interface GatherOptions {
  hub: AgentHub;
  clients: readonly string[];
  /** The task for each client (the same SharedPayload may serve all). */
  task: (client: string) => TaskSpec;
  /** The round succeeds only with at least this many accepted results. */
  minResults: number;
  /** Once minResults arrived, wait at most this long for the rest, then stop waiting for stragglers. */
  waitAfterMinMs: number;
  /** Each client's deadline; undefined: only the job's abort ends the wait. */
  taskTimeoutMs: number | undefined;
  /** Strict: any client's failure fails the round. Resilient: failures are dropped while minResults can still be met. */
  strict: boolean;
  signal: AbortSignal;
  logger: Logger;
  /**
   * Takes an OK result as it arrives (for example folds it into an aggregate);
   * throwing, or rejecting, refuses it. An uploaded result's staged file is
   * released when it returns or its promise settles: read `outcome.data` or
   * `outcome.staged` until then. `last`: every other client's task has ended,
   * so no result of this round comes after it. The round ends only once every
   * accept() has settled.
   */
  accept(outcome: TaskOutcome, last: boolean): void | Promise<void>;
}

export interface GatherReport {
  accepted: string[];
  /** Why each other client has no accepted result. */
  failures: Map<string, string>;
}

/** The round could not produce enough results; the message says who failed and why. */
export class RoundFailed extends Error {}

/**
 * Scatter one task to every client and take their results as they arrive:
 * the shared core of FedAvg, cross-site evaluation and broadcast. Results are
 * handed to accept() one at a time, so a workflow can fold each into an
 * aggregate and let it go.
 */
export async function scatterGather(options: GatherOptions): Promise<GatherReport> {
  const { clients, minResults, strict, logger } = options;
  const round = new AbortController();
  const signal = AbortSignal.any([options.signal, round.signal]);
  const report: GatherReport = { accepted: [], failures: new Map() };
  let stragglerTimer: NodeJS.Timeout | undefined;
  let outstanding = clients.length;

  const fail = (client: string, reason: string) => {
    report.failures.set(client, reason);
    logger.warn({ client, reason }, "client result not used");
    if (strict) round.abort(new RoundFailed(`client ${client}: ${reason}`));
    else if (clients.length - report.failures.size < minResults) {
      round.abort(new RoundFailed(`only ${clients.length - report.failures.size} of the ${minResults} results needed can still arrive: ${describeFailures(report.failures)}`));
    }
  };

  await Promise.all(
    clients.map(async (client) => {
      try {
        let outcome: TaskOutcome;
        try {
          outcome = await options.hub.sendTask(client, options.task(client), options.taskTimeoutMs === undefined ? { signal } : { signal, timeoutMs: options.taskTimeoutMs });
        } finally {
          // Counted down where this client's code resumes, not where its task settled: two tasks settling in one turn
          // must not both find the other one done.
          outstanding--;
        }
        if (!carriesData(outcome.returnCode)) return fail(client, failureOf(outcome));
        try {
          await options.accept(outcome, outstanding === 0);
        } catch (error) {
          return fail(client, (error as Error).message);
        } finally {
          // Whatever accept() did with an uploaded result, its staged file is done with.
          outcome.staged?.release();
        }
        report.accepted.push(client);
        if (report.accepted.length === minResults && report.accepted.length < clients.length) {
          stragglerTimer = setTimeout(() => round.abort(new StragglersDropped()), options.waitAfterMinMs);
        }
      } catch (error) {
        if (round.signal.aborted && round.signal.reason instanceof StragglersDropped) return void report.failures.set(client, "dropped: too slow after the minimum of results arrived");
        if (options.signal.aborted || round.signal.aborted) return;
        fail(client, error instanceof SiteError ? `${error.name}: ${error.message}` : String(error));
      }
    }),
  );
  clearTimeout(stragglerTimer);
  if (options.signal.aborted) throw options.signal.reason;
  if (round.signal.reason instanceof RoundFailed) throw round.signal.reason;
  if (report.accepted.length < minResults) {
    throw new RoundFailed(`${report.accepted.length} of the ${minResults} results needed arrived: ${describeFailures(report.failures)}`);
  }
  return report;
}

class StragglersDropped extends Error {}

function describeFailures(failures: Map<string, string>): string {
  return [...failures].map(([client, reason]) => `${client}: ${reason}`).join("; ") || "no client failed";
}
