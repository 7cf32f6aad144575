/** The agent runtime's typed errors, as the trainer sees them. */
export class AgentError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The agent is closed (stopped locally, replaced, or refused by the site): no more tasks will come. */
export class AgentClosed extends AgentError {}

/** The site said the job ended. A kind of AgentClosed: the agent is closed afterwards. */
export class AgentEnded extends AgentClosed {}

/** The site aborted the task the trainer was working on. Thrown once, by the next getTask(). */
export class AgentAborted extends AgentError {
  constructor(
    readonly taskId: string,
    reason: string,
  ) {
    super(`task ${taskId} was aborted by the site: ${reason}`);
  }
}

/** No sign of life from the site within the heartbeat timeout. The agent keeps trying to reconnect. */
export class AgentPeerGone extends AgentError {}

/** getTask() / submitResult() called out of turn. */
export class CallStateError extends AgentError {}
