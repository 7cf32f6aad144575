import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type pg from "pg";
import { LeaseLost } from "../site/replicas/errors.js";
import type { Lease, LeaseHolder } from "../site/replicas/lease.js";

/** The one lease row: a database serves one site, whose replicas share it. */
const LEASE = "leader";

/**
 * The leader lease as a row of campfire_lease (holder, epoch, expires_at), with
 * every acquisition in campfire_lease_history. Times are the database's
 * (clock_timestamp()), so replicas' clocks need not agree. Taking the lease
 * locks its row, so it waits for every fenced write in flight (fenceCheck holds
 * the row FOR SHARE until its transaction ends): a write of the old epoch
 * either commits before the new epoch exists, or fails.
 */
export class PostgresLease implements Lease {
  readonly holder = `${hostname()}/${process.pid}/${randomBytes(3).toString("hex")}`;

  constructor(private readonly pool: pg.Pool) {}

  async acquire(leaseMs: number): Promise<number | undefined> {
    const { rows } = await this.pool.query<{ epoch: string }>(
      `WITH taken AS (
         INSERT INTO campfire_lease AS lease (name, holder, epoch, expires_at)
         VALUES ($1, $2, COALESCE((SELECT max(epoch) FROM campfire_lease_history), 0) + 1, clock_timestamp() + $3 * interval '1 millisecond')
         ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, epoch = lease.epoch + 1, expires_at = clock_timestamp() + $3 * interval '1 millisecond'
         WHERE lease.expires_at <= clock_timestamp()
         RETURNING epoch, holder
       )
       INSERT INTO campfire_lease_history (epoch, holder, acquired_at) SELECT epoch, holder, clock_timestamp() FROM taken RETURNING epoch`,
      [LEASE, this.holder, leaseMs],
    );
    return rows[0] ? Number(rows[0].epoch) : undefined;
  }

  async renew(epoch: number, leaseMs: number): Promise<boolean> {
    const { rowCount } = await this.pool.query(
      `UPDATE campfire_lease SET expires_at = clock_timestamp() + $4 * interval '1 millisecond'
       WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()`,
      [LEASE, this.holder, epoch, leaseMs],
    );
    return rowCount === 1;
  }

  async release(epoch: number): Promise<boolean> {
    const { rowCount } = await this.pool.query(
      "UPDATE campfire_lease SET expires_at = clock_timestamp() WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()",
      [LEASE, this.holder, epoch],
    );
    return rowCount === 1;
  }

  async current(): Promise<LeaseHolder | undefined> {
    const { rows } = await this.pool.query<{ holder: string; epoch: string; expires_in_ms: number }>(
      "SELECT holder, epoch, extract(epoch FROM expires_at - clock_timestamp()) * 1000 AS expires_in_ms FROM campfire_lease WHERE name = $1",
      [LEASE],
    );
    return rows[0] && { holder: rows[0].holder, epoch: Number(rows[0].epoch), expiresInMs: Number(rows[0].expires_in_ms) };
  }
}

/**
 * The fence, run first in a write's transaction: holds the lease row FOR SHARE
 * until the transaction ends (so no takeover can commit in between) and throws
 * LeaseLost unless the lease is still `epoch`'s and unexpired.
 */
export async function fenceCheck(client: pg.PoolClient, epoch: number): Promise<void> {
  const { rows } = await client.query<{ epoch: string; holder: string; valid: boolean }>(
    "SELECT epoch, holder, expires_at > clock_timestamp() AS valid FROM campfire_lease WHERE name = $1 FOR SHARE",
    [LEASE],
  );
  const row = rows[0];
  if (row && Number(row.epoch) === epoch && row.valid) return;
  const why = !row ? "there is no lease" : Number(row.epoch) !== epoch ? `${row.holder} took it over at epoch ${row.epoch}` : "it expired";
  throw new LeaseLost(`a write of epoch ${epoch} was refused: ${why}`, epoch);
}
