import { join } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import { EXIT, type Runner } from "./exit-codes.js";
import { output, table } from "./output.js";
import { integer } from "./parse.js";
import { DEFAULT_DATA_DIR } from "./process-commands.js";

interface AuditCommandOptions {
  dataDir: string;
  file?: string;
  identity?: string;
  action?: string;
  outcome?: "allowed" | "denied" | "failed";
  job?: string;
  since?: Date;
  last?: number;
}

/** `campfire audit`: reads the site's audit log (it runs where the site's data directory is). */
export function addAuditCommand(program: Command, run: Runner): void {
  program
    .command("audit")
    .description("show the site's audit log: every admin call, agent join and leave, and denied agent action")
    .addOption(new Option("--data-dir <dir>", "the site's data directory (the log is <dir>/audit.jsonl)").env("CAMPFIRE_DATA_DIR").default(DEFAULT_DATA_DIR))
    .option("--file <path>", "read this audit log instead")
    .option("--identity <name>", "only this caller (a certificate's or token's name)")
    .option("--action <action>", 'only this action (SubmitJob, agent.join, ...); "agent." or "Job*" for a prefix')
    .addOption(new Option("--outcome <outcome>", "only this outcome").choices(["allowed", "denied", "failed"]))
    .option("--job <id>", "only lines about this job")
    .option("--since <time>", "only lines at or after this ISO time (2026-12-03T10:00:00Z)", time)
    .option("--last <n>", "only the newest n lines that match", integer(1))
    .addHelpText(
      "after",
      `
Each line of the log is one JSON object: time, identity, org, role, via
(certificate, token, open, none), action, jobId, outcome, reason, peer, agentId.
With --json the matching lines are printed as a JSON array.

Examples:
  $ campfire audit --outcome denied
  $ campfire audit --identity lead@b.org --since 2026-12-03T00:00:00Z
  $ campfire audit --action agent. --last 20
  $ jq -c 'select(.outcome == "denied")' .campfire/site/audit.jsonl`,
    )
    .action(
      run(async (options: AuditCommandOptions, command: Command) => {
        const { json } = command.optsWithGlobals<{ json: boolean }>();
        const out = output(json);
        const { readAudit, selectAudit, AUDIT_FILE } = await import("../security/audit.js");
        const path = options.file ?? join(options.dataDir, AUDIT_FILE);
        let records;
        try {
          records = await readAudit(path);
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === "ENOENT") throw new Error(`no audit log at ${path}: give the site's --data-dir (or --file)`, { cause: error });
          throw error;
        }
        const selected = selectAudit(records, { identity: options.identity, action: options.action, outcome: options.outcome, jobId: options.job, since: options.since, last: options.last });
        if (out.json) {
          out.data(selected);
          return EXIT.OK;
        }
        if (selected.length === 0) {
          out.line("no audit lines match");
          return EXIT.OK;
        }
        out.line(
          table(
            ["TIME", "IDENTITY", "ORG", "ROLE", "ACTION", "JOB", "OUTCOME", "REASON"],
            selected.map((record) => [record.time, record.identity || "-", record.org || "-", record.role || "-", record.action, record.jobId ?? "", record.outcome, record.reason ?? ""]),
          ),
        );
        return EXIT.OK;
      }),
    );
}

function time(value: string): Date {
  const parsed = new Date(value);
  if (Number.isNaN(parsed.getTime())) throw new InvalidArgumentError(`expected an ISO time such as 2026-12-03T10:00:00Z, got ${JSON.stringify(value)}`);
  return parsed;
}
