import type { DataExchange } from "../shared/payload.js";
import type { Logger } from "../shared/logger.js";
import { filtersFor, runFilters, taskBase } from "./chain.js";
import { type FilterConfig, FilterConfigError, parseJobFilters } from "./config.js";

/** Runs on one incoming result: `taskData` is what the task carried (the base of a WEIGHTS result's update). */
export type ResultFilter = (result: DataExchange, taskData: DataExchange | undefined) => DataExchange;

/**
 * The filters of a job's config_fed_server.json (docs/privacy.md). Its
 * task_result_filters run on each incoming result before the workflow sees
 * it; task_data_filters are refused for now (the site prepares one payload for
 * every client of a round, before it knows whose task it is).
 */
export function parseServerFilters(serverConfig: Record<string, unknown>, field: string): FilterConfig {
  const config = parseJobFilters(serverConfig, field);
  if (config.taskDataFilters.length) {
    throw new FilterConfigError(`${field}.task_data_filters: the site does not filter task data (yet); filter it at the clients (config_fed_client.json's task_data_filters)`);
  }
  return config;
}

/** The filter for a result of task `taskName` of a job with `config`, or undefined when none applies. */
export function siteResultFilter(config: FilterConfig, taskName: string, context: { jobId: string; clientName: string; logger: Logger }): ResultFilter | undefined {
  const filters = filtersFor(config.taskResultFilters, taskName);
  if (filters.length === 0) return undefined;
  return (result, taskData) => {
    const filtered = runFilters(filters, result, taskData && taskBase(taskData.tensors, false));
    const { filters_applied: applied, ...meta } = filtered.meta ?? {};
    context.logger.info({ job: context.jobId, client: context.clientName, taskName, filters: applied }, "site filters applied to a result");
    // The site's filters are its own record (this log line), not the client's result.
    return { ...filtered, meta: { ...meta, ...(result.meta?.filters_applied === undefined ? {} : { filters_applied: result.meta.filters_applied }) } };
  };
}
