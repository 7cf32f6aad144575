import { CommanderError } from "commander";
import { InvalidArgumentError, InvalidJobDefinition, JobNotDone, JobNotFound, NoConnection } from "../session-client/errors.js";

/** What `campfire` exits with. Listed in `campfire --help`. */
export const EXIT = {
  /** Done. */
  OK: 0,
  /** Anything else: the site failed, authentication or permission refused, a local file error. */
  OTHER: 1,
  /** Usage: a bad command line, an invalid argument or job definition. */
  USAGE: 2,
  /** No job has that id. */
  NOT_FOUND: 3,
  /** The job is in the wrong state: not finished (download) or still running (delete). */
  NOT_DONE: 4,
  /** The site cannot be reached or did not answer in time. */
  CONNECTION: 5,
  /** monitor: the timeout passed before the job finished. */
  MONITOR_TIMEOUT: 6,
  /** monitor: the job finished, but not FINISHED:COMPLETED. */
  JOB_NOT_COMPLETED: 7,
  /** campfire site: this replica lost the leader lease and stepped down; restarted, it stands again as a standby. */
  LEASE_LOST: 8,
  /** Interrupted (Ctrl-C), as shells count 128 + SIGINT; the job itself goes on. */
  INTERRUPTED: 130,
} as const;

export const EXIT_CODES_HELP = `
Exit codes:
  0  ok
  1  other failure (site error, authentication or permission refused, local file error)
  2  usage: bad command line, invalid argument or job definition
  3  no job has that id
  4  the job is in the wrong state (not finished for download, still running for delete)
  5  cannot reach the site (or it did not answer in time)
  6  monitor: timed out before the job finished
  7  monitor: the job finished, but not FINISHED:COMPLETED
  8  site: this replica lost the leader lease and stepped down (restart it: it stands again)
  130  interrupted (Ctrl-C); a monitored job goes on running`;

export function exitCodeOf(error: unknown): number {
  if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
  if (error instanceof InvalidArgumentError || error instanceof InvalidJobDefinition) return EXIT.USAGE;
  if (error instanceof JobNotFound) return EXIT.NOT_FOUND;
  if (error instanceof JobNotDone) return EXIT.NOT_DONE;
  if (error instanceof NoConnection) return EXIT.CONNECTION;
  return EXIT.OTHER;
}

/** Wraps a command's action so that the exit code it resolves with becomes the process's. */
export type Runner = <A extends unknown[]>(action: (...args: A) => Promise<number>) => (...args: A) => Promise<void>;
