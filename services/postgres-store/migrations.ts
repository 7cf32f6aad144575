import type { PoolClient } from "pg";

/**
 * The schema, as numbered steps. A step is never edited once released: a
 * change is a new step. open() applies the missing ones in one transaction
 * under an advisory lock, so replicas starting together migrate once.
 */
export const MIGRATIONS: ReadonlyArray<{ version: number; description: string; sql: string }> = [
  {
    version: 1,
    description: "jobs with their meta and definition, and every status transition",
    sql: `
      CREATE TABLE campfire_jobs (
        job_id       text PRIMARY KEY,
        status       integer NOT NULL,
        meta         jsonb NOT NULL,
        definition   bytea NOT NULL,
        submitted_at timestamptz NOT NULL,
        updated_at   timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE campfire_job_transitions (
        id          bigserial PRIMARY KEY,
        job_id      text NOT NULL REFERENCES campfire_jobs (job_id) ON DELETE CASCADE,
        from_status integer,
        to_status   integer NOT NULL,
        at          timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX campfire_job_transitions_job ON campfire_job_transitions (job_id, id);
    `,
  },
  {
    version: 2,
    description: "the replicas' leader lease with its epoch (the fencing token), every acquisition, checkpoints named under the fence",
    sql: `
      CREATE TABLE campfire_lease (
        name       text PRIMARY KEY,
        holder     text NOT NULL,
        epoch      bigint NOT NULL,
        expires_at timestamptz NOT NULL
      );
      CREATE TABLE campfire_lease_history (
        epoch       bigint PRIMARY KEY,
        holder      text NOT NULL,
        acquired_at timestamptz NOT NULL
      );
      CREATE TABLE campfire_checkpoints (
        job_id       text PRIMARY KEY REFERENCES campfire_jobs (job_id) ON DELETE CASCADE,
        position     integer NOT NULL,
        state        jsonb NOT NULL,
        model_file   text,
        model_sha256 text,
        epoch        bigint NOT NULL,
        written_at   timestamptz NOT NULL DEFAULT clock_timestamp()
      );
      ALTER TABLE campfire_jobs ADD COLUMN epoch bigint;
      ALTER TABLE campfire_job_transitions ADD COLUMN epoch bigint;
      ALTER TABLE campfire_job_transitions ALTER COLUMN at SET DEFAULT clock_timestamp();
    `,
  },
  {
    version: 3,
    description: "the rounds a job recorded (metrics/rounds.jsonl's lines), written under the leader's fence",
    sql: `
      CREATE TABLE campfire_job_rounds (
        job_id     text NOT NULL REFERENCES campfire_jobs (job_id) ON DELETE CASCADE,
        round      integer NOT NULL,
        line       json NOT NULL,
        epoch      bigint NOT NULL,
        written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (job_id, round)
      );
    `,
  },
];

/** An arbitrary but fixed key: the advisory lock that serializes migrations across processes. */
const MIGRATION_LOCK = 0x63616d70;

/** Applies the migrations the database lacks; returns the schema version it is at. */
export async function migrate(client: PoolClient): Promise<number> {
  await client.query("BEGIN");
  try {
    await client.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK]);
    await client.query("CREATE TABLE IF NOT EXISTS campfire_schema (version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())");
    const { rows } = await client.query<{ version: number | null }>("SELECT max(version) AS version FROM campfire_schema");
    const current = rows[0]?.version ?? 0;
    const newest = MIGRATIONS.at(-1)!.version;
    if (current > newest) throw new Error(`the database's campfire schema is version ${current}, newer than this site knows (${newest}): upgrade the site`);
    for (const step of MIGRATIONS.filter((migration) => migration.version > current)) {
      await client.query(step.sql);
      await client.query("INSERT INTO campfire_schema (version, description) VALUES ($1, $2)", [step.version, step.description]);
    }
    await client.query("COMMIT");
    return newest;
  } catch (error) {
    await client.query("ROLLBACK");
    throw error;
  }
}
