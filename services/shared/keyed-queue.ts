/**
 * Runs the work given for one key one after another, in the order given
 * (work for different keys runs side by side). A failure is its caller's; the
 * next work for the key runs anyway.
 */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const next = previous.then(work, work);
    const settled = next.catch(() => undefined);
    this.tails.set(key, settled);
    void settled.then(() => {
      if (this.tails.get(key) === settled) this.tails.delete(key);
    });
    return next;
  }

  /** Resolves once all work given so far has settled. */
  async idle(): Promise<void> {
    await Promise.allSettled(this.tails.values());
  }
}
