import type { Trainer } from "../cli/agent-loop.js";
import type { Logger } from "../shared/logger.js";
import { TrainerGateway } from "./gateway.js";
import { TrainerApiServer } from "./server.js";
import { SharedDir } from "./shared-dir.js";

export { TrainerGateway } from "./gateway.js";
export { TrainerApiServer } from "./server.js";
export { SharedDir } from "./shared-dir.js";

export interface TrainerApiOptions {
  /** 127.0.0.1:<port>, [::1]:<port>, localhost:<port> or unix:<path>. */
  address: string;
  clientName: string;
  /** A directory shared with the trainer (a pod volume) for tensors as files. */
  sharedDir?: string;
  allowRemote?: boolean;
  maxResultBytes?: number;
  logger?: Logger;
}

/** `campfire agent --trainer-api`: serves the trainer API and returns the agent loop's trainer that feeds it. */
export async function startTrainerApi(options: TrainerApiOptions): Promise<{ trainer: Trainer; address: string; stop(): Promise<void> }> {
  const sharedDir = options.sharedDir ? await SharedDir.open(options.sharedDir) : undefined;
  const gateway = new TrainerGateway({ clientName: options.clientName, sharedDir, maxResultBytes: options.maxResultBytes, logger: options.logger });
  const server = await TrainerApiServer.start({ address: options.address, gateway, allowRemote: options.allowRemote, logger: options.logger });
  return { trainer: gateway.trainer, address: server.address, stop: () => server.stop() };
}
