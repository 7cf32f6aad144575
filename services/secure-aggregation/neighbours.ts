import { randomInt } from "node:crypto";

/**
 * Who shares keys and masks with whom. SecAgg pairs every client with every
 * other (degree undefined, or at least n - 1): n - 1 masks and shares per
 * client. SecAgg+ (Bell et al. 2020) pairs each client with `degree` others
 * only, chosen at random by the site each round: O(log n) neighbours keep
 * the same guarantees with high probability at a fraction of the cost. The
 * graph here is a ring over a random order of the clients, each joined to its
 * degree / 2 nearest on either side (degree rounded up to even), so that it is
 * `degree`-regular and every neighbourhood has the same size.
 */
export function neighbourGraph(clients: readonly string[], degree: number | undefined): Map<string, string[]> {
  const n = clients.length;
  if (degree === undefined || degree >= n - 1) return new Map(clients.map((client) => [client, clients.filter((other) => other !== client).sort()]));
  const half = Math.ceil(degree / 2);
  if (2 * half >= n - 1) return neighbourGraph(clients, undefined);
  const ring = [...clients];
  for (let index = ring.length - 1; index > 0; index--) {
    const other = randomInt(index + 1);
    [ring[index], ring[other]] = [ring[other]!, ring[index]!];
  }
  return new Map(
    ring.map((client, position) => {
      const around = Array.from({ length: half }, (_, step) => [ring[(position + step + 1) % n]!, ring[(position - step - 1 + n) % n]!]).flat();
      return [client, around.sort()];
    }),
  );
}

/**
 * The default threshold for a neighbourhood of `size` clients (the client
 * and its neighbours): more than two thirds of it, floor(2 x size / 3) + 1,
 * at least 2. Bonawitz et al. show the protocol keeps every result private
 * against the site with fewer than the threshold clients colluding, and
 * recovers the sum while at least the threshold survive; above two thirds,
 * the site cannot get both a client's secrets by telling two groups of
 * clients different stories. So up to a third of each neighbourhood (rounded
 * down, less one) may drop out: 1 of 4, 2 of 8.
 */
export function defaultThreshold(size: number): number {
  return Math.max(2, Math.floor((2 * size) / 3) + 1);
}
