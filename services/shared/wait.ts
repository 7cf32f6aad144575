import { defaultMaxListeners, getMaxListeners, setMaxListeners } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";

/** Sleeps for `ms`, or rejects with the signal's reason as soon as it aborts. */
export async function delay(ms: number, signal?: AbortSignal): Promise<void> {
  await sleep(ms, undefined, signal ? { signal } : undefined);
}

/** Capped exponential backoff with full jitter: a random delay in [0, min(cap, base * 2^attempt)]. */
export function backoffDelay(attempt: number, baseMs: number, capMs: number): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.random() * ceiling;
}

/**
 * Lets `signal` carry a listener for each of `fanOut` waits at once (every
 * task sent with it listens until it ends) on top of Node's default allowance:
 * past 10, Node prints a "possible EventTarget memory leak" warning for what
 * is a job or a round sending a task to each of its clients.
 */
export function allowFanOut(signal: AbortSignal, fanOut: number): void {
  setMaxListeners(Math.max(getMaxListeners(signal), defaultMaxListeners + fanOut), signal);
}
