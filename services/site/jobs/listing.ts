import type { JobMeta } from "./model.js";

/** Filters and order of a listing (the reference list_jobs options). */
export interface ListFilter {
  /** Jobs of every submitter (that the caller may view), not only the caller's own. */
  allSubmitters: boolean;
  namePrefix: string;
  idPrefix: string;
  /** Only the newest N; 0 means all. */
  newest: number;
  reverse: boolean;
}

/**
 * The jobs a listing shows, oldest first (newest first with `reverse`): the
 * caller's own unless `allSubmitters`, and of those only what `mayView` lets
 * through (the authorization policy's view scope).
 */
export function selectJobs(jobs: Iterable<JobMeta>, filter: ListFilter, caller: string, mayView: (meta: JobMeta) => boolean): JobMeta[] {
  let selected = [...jobs]
    .filter((meta) => (filter.allSubmitters || meta.submitter === caller) && mayView(meta))
    .filter((meta) => meta.name.startsWith(filter.namePrefix) && meta.jobId.startsWith(filter.idPrefix))
    .sort(bySubmitTime);
  if (filter.newest > 0) selected = selected.slice(-filter.newest);
  if (filter.reverse) selected.reverse();
  return selected;
}

/** Submit order; the id breaks ties. */
export function bySubmitTime(a: JobMeta, b: JobMeta): number {
  return (a.submitTime?.getTime() ?? 0) - (b.submitTime?.getTime() ?? 0) || (a.jobId < b.jobId ? -1 : a.jobId > b.jobId ? 1 : 0);
}
