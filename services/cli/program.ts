import { Command } from "commander";
import { addAdminCommands, adminOptions } from "./admin-commands.js";
import { addAuditCommand } from "./audit-command.js";
import { EXIT_CODES_HELP, exitCodeOf, type Runner } from "./exit-codes.js";
import { addHealthCommand } from "./health-command.js";
import { addProcessCommands } from "./process-commands.js";
import { addProvisionCommand } from "./provision-command.js";

const OVERVIEW = `
Environment (each stands for the option beside it):
  CAMPFIRE_SITE         --site          the site's address for admin commands and agents
  CAMPFIRE_TOKEN        --token         your admin token
  CAMPFIRE_TLS_DIR      --tls-dir       your TLS kit (campfire provision writes them)
  CAMPFIRE_JSON=1       --json          JSON output
  CAMPFIRE_TIMEOUT_MS   --timeout-ms    deadline of each call
  (campfire site and campfire agent list theirs in their --help)

Examples:
  $ campfire site --listen 127.0.0.1:7443 &
  $ campfire agent --client hospital-a &
  $ id=$(campfire submit ./jobs/hello)
  $ campfire monitor "$id"
  $ campfire download "$id" --out ./results
  $ campfire list --all --newest 10 --json
${EXIT_CODES_HELP}`;

/**
 * The `campfire` command line. Runs `argv` (process.argv layout) and resolves
 * with the exit code; errors are printed on stderr, never thrown.
 */
export async function runCli(argv: string[]): Promise<number> {
  let exitCode = 0;
  const run: Runner =
    (action) =>
    async (...args) => {
      exitCode = await action(...args);
    };
  const program = new Command("campfire")
    .description("Campfire: federated learning jobs on a site and its agents")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) })
    .addHelpText("after", OVERVIEW);
  adminOptions(program);
  addProcessCommands(program, run);
  addAdminCommands(program, run);
  addProvisionCommand(program, run);
  addAuditCommand(program, run);
  addHealthCommand(program, run);
  for (const command of program.commands) command.exitOverride();
  try {
    await program.parseAsync(argv);
    return exitCode;
  } catch (error) {
    const code = exitCodeOf(error);
    if (!isCommanderError(error)) process.stderr.write(`campfire: ${(error as Error).message ?? String(error)}\n`);
    return code;
  }
}

function isCommanderError(error: unknown): boolean {
  return typeof (error as { code?: unknown }).code === "string" && String((error as { code: string }).code).startsWith("commander.");
}
