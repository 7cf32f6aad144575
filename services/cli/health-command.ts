import { type Command, Option } from "commander";
import type { AdminOptions } from "./admin-commands.js";
import { EXIT, type Runner } from "./exit-codes.js";

/**
 * `campfire health`: one grpc.health.v1 Check, for container health checks
 * and exec probes. Prints the status; exits 0 only when SERVING, 5 when the
 * site cannot be reached in time, 1 otherwise (NOT_SERVING, unknown service).
 */
export function addHealthCommand(program: Command, run: Runner): void {
  program
    .command("health")
    .description("ask the site whether it serves (grpc.health.v1 Check); exits 0 only when SERVING")
    .addOption(
      new Option("--service <name>", "the service to ask about: '' (the process), campfire.agent.v1.AgentService or campfire.admin.v1.SessionService").default(""),
    )
    .addHelpText(
      "after",
      `
Needs no admin token and no client certificate: with a TLS site, --tls-dir may
be any kit of the project (even one holding only ca.crt).

Examples:
  $ campfire health --site 127.0.0.1:7443
  $ campfire health --site site.example:7443 --tls-dir ./kits/site --service campfire.agent.v1.AgentService --timeout-ms 3000`,
    )
    .action(
      run(async (options: { service: string }, command: Command) => {
        const globals = command.optsWithGlobals<AdminOptions>();
        const [health, { siteChannelCredentials }, { clientTransport }, { NoConnection }, { Metadata, status: Status }] = await Promise.all([
          import("../../gen/grpc/health/v1/health.js"),
          import("../security/client-transport.js"),
          import("./admin-commands.js"),
          import("../session-client/errors.js"),
          import("@grpc/grpc-js"),
        ]);
        const { HealthClient, HealthCheckResponse_ServingStatus: ServingStatus } = health;
        const client = new HealthClient(globals.site, siteChannelCredentials(globals.site, await clientTransport(globals)));
        try {
          const status = await new Promise<number>((resolve, reject) =>
            client.check({ service: options.service }, new Metadata(), { deadline: Date.now() + globals.timeoutMs }, (error, response) => {
              if (!error) return resolve(response.status);
              if (error.code === Status.NOT_FOUND) return resolve(ServingStatus.SERVICE_UNKNOWN);
              if (error.code === Status.UNAVAILABLE || error.code === Status.DEADLINE_EXCEEDED) {
                return reject(new NoConnection(`cannot reach the site at ${globals.site}: ${error.details || error.message}`, { cause: error, code: error.code }));
              }
              reject(error);
            }),
          );
          process.stdout.write(`${health.healthCheckResponse_ServingStatusToJSON(status)}\n`);
          return status === ServingStatus.SERVING ? EXIT.OK : EXIT.OTHER;
        } finally {
          client.close();
        }
      }),
    );
}
