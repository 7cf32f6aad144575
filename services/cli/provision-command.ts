import type { Command } from "commander";
import { EXIT, type Runner } from "./exit-codes.js";
import { output, table } from "./output.js";

interface ProvisionCommandOptions {
  out: string;
  renew: string[];
  revoke?: string;
  reason: string;
}

/** `campfire provision`: the project's CA and one kit per participant, from a project file. */
export function addProvisionCommand(program: Command, run: Runner): void {
  program
    .command("provision")
    .description("create the project's certificate authority and a TLS kit per participant (site, clients, admins)")
    .argument("<project-file>", "the project file, YAML or JSON (see examples/project.yaml)")
    .requiredOption("--out <dir>", "where the CA (<dir>/ca) and the kits (<dir>/<participant>) go")
    .option("--renew <name>", "issue this participant a new key and certificate (rotation); repeatable", (value: string, previous: string[]) => [...previous, value], [])
    .option("--revoke <name>", "record that this participant's current certificate is revoked (the site refuses it after a reload)")
    .option("--reason <text>", "why, with --revoke", "")
    .addHelpText(
      "after",
      `
A project file:
  name: demo
  site: { name: site, hosts: [localhost, 127.0.0.1] }
  clients: [{ name: hospital-a, org: a, resources: { gpu: 1 } }, { name: hospital-b, org: b }]
  admins: [{ name: alice@a.org, org: a, role: project_admin }]     # roles: project_admin, org_admin, lead, member

Re-running adds kits for new participants and leaves the others' certificates
alone. Hand each participant its own folder; keep <dir>/ca (the CA's key) offline.

Examples:
  $ campfire provision examples/project.yaml --out ./kits
  $ campfire provision examples/project.yaml --out ./kits --renew hospital-a
  $ campfire provision examples/project.yaml --out ./kits --revoke hospital-b --reason "laptop stolen"
  $ kill -HUP <site pid>     # the site re-reads its kit's revoked.json`,
    )
    .action(
      run(async (file: string, options: ProvisionCommandOptions, command: Command) => {
        const { json } = command.optsWithGlobals<{ json: boolean }>();
        const out = output(json);
        const [{ readProject }, { provision, revoke }] = await Promise.all([import("../security/project.js"), import("../security/provision.js")]);
        const project = await readProject(file);
        if (options.revoke) {
          const revocation = await revoke(project, options.out, options.revoke, options.reason);
          if (out.json) out.data(revocation);
          else out.line(`revoked ${revocation.name} (serial ${revocation.serial}); the site refuses it after its next start or SIGHUP`);
          return EXIT.OK;
        }
        const report = await provision(project, options.out, { renew: options.renew });
        if (out.json) {
          out.data(report);
          return EXIT.OK;
        }
        if (report.createdCa) out.line(`created the certificate authority of project ${project.name} in ${options.out}/ca (keep it offline)`);
        const rows = [
          ...report.issued.map((record) => [record.name, record.role, record.org, "issued", record.notAfter]),
          ...report.kept.map((name) => [name, "", "", "kept", ""]),
        ];
        out.line(table(["participant", "role", "org", "kit", "expires"], rows));
        return EXIT.OK;
      }),
    );
}
