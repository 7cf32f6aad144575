/**
 * Resolves when any listener in `listeners` is called (new input arrived) or
 * after `timeoutMs`, whichever comes first; the listener removes itself.
 */
export function nextWakeUp(listeners: Set<() => void>, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(done, timeoutMs);
    function done() {
      clearTimeout(timer);
      listeners.delete(done);
      resolve();
    }
    listeners.add(done);
  });
}
