/**
 * A protocol message that breaks the rules (a share of the wrong length, a key
 * that is not a key, a request the protocol forbids): refused, and the message
 * names the field and the problem. The round goes on without its sender when
 * enough clients remain.
 */
export class ProtocolViolation extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ProtocolViolation";
  }
}

/** Too few clients are left to finish the round (to recover the masks, or to meet the threshold). */
export class RoundUnrecoverable extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RoundUnrecoverable";
  }
}
