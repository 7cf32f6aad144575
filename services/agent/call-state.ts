import { AgentAborted, CallStateError } from "./errors.js";

/**
 * The trainer's side of the task contract, as a small state machine:
 * getTask -> (work) -> submitResult -> getTask ... A task aborted while the
 * trainer holds it frees the trainer (submitResult then returns false, and
 * getTask may be called without submitting) and is reported once, as
 * AgentAborted, by the next getTask.
 */
export class CallState {
  private held: { taskId: string; aborted?: string } | undefined;
  private submitting = false;
  private pendingAbort: AgentAborted | undefined;

  /** Checks that getTask may be called now; throws the pending abort once. */
  beginGetTask(): void {
    if (this.submitting) throw new CallStateError("getTask called while submitResult is still running");
    if (this.held && this.held.aborted === undefined) {
      throw new CallStateError(`getTask called before the result of task ${this.held.taskId} was submitted`);
    }
    this.held = undefined;
    const abort = this.pendingAbort;
    this.pendingAbort = undefined;
    if (abort) throw abort;
  }

  /** The trainer now holds `taskId`. */
  handOut(taskId: string): void {
    this.held = { taskId };
  }

  /** Checks that submitResult may be called now, and returns the task it answers, or undefined when that task was aborted. */
  beginSubmit(): { taskId: string; aborted: boolean } {
    if (this.submitting) throw new CallStateError("submitResult called while another submitResult is running");
    if (!this.held) throw new CallStateError("submitResult called without a task: call getTask first (and submit each task once)");
    const held = this.held;
    this.held = undefined;
    this.submitting = held.aborted === undefined;
    return { taskId: held.taskId, aborted: held.aborted !== undefined };
  }

  endSubmit(): void {
    this.submitting = false;
  }

  /** The site aborted `taskId`. Returns true when the trainer holds it (and is now freed). */
  abort(taskId: string, reason: string): boolean {
    if (this.held?.taskId !== taskId || this.held.aborted !== undefined) return false;
    this.held.aborted = reason;
    this.pendingAbort = new AgentAborted(taskId, reason);
    return true;
  }

  get heldTaskId(): string | undefined {
    return this.held?.taskId;
  }
}
