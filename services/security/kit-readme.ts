import type { ParticipantSubject } from "./certificates.js";
import type { Project } from "./project.js";

/** The README a kit carries: who it is for and the one command that starts its participant. */
export function kitReadme(project: Project, participant: ParticipantSubject): string {
  const site = `${project.site.hosts[0]}:7443`;
  const files = [
    "- `ca.crt`: the project's certificate authority; trust nothing it did not sign.",
    `- \`${participant.name}.crt\`: your certificate (CN=${participant.name}, O=${participant.org}, OU=${participant.role}).`,
    `- \`${participant.name}.key\`: your private key (mode 0600). Never copy it anywhere else; if it leaks, ask for a revocation and a new kit.`,
  ];
  const start =
    participant.role === "site"
      ? [
          "```sh",
          `campfire site --listen 0.0.0.0:7443 --tls-dir ${participant.name}`,
          "```",
          "",
          "`participants.json` lists the clients, their organisations and the resources the site offers",
          "jobs on their behalf. `revoked.json` lists revoked certificates; after `campfire provision",
          "--revoke`, copy the new one here and send the site SIGHUP (or restart it).",
        ]
      : participant.role === "client"
        ? ["```sh", `campfire agent --site ${site} --client ${participant.name} --tls-dir ${participant.name}`, "```"]
        : ["```sh", `export CAMPFIRE_SITE=${site} CAMPFIRE_TLS_DIR=$PWD/${participant.name}`, "campfire submit ./my-job    # signed with your key", "campfire list --all", "```"];
  return [`# ${participant.name}: Campfire kit of project ${project.name}`, "", ...files, "", "Start with:", "", ...start, ""].join("\n");
}
