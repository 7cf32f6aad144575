import { COLLECT_BEFORE_BYTES } from "../shared/memory.js";
import type { DataExchange, StreamedEncoding } from "../shared/payload.js";

/**
 * Model-sized buffers of an agent: who owns them, and their reuse.
 *
 * A fresh buffer costs more than the bytes copied into it: the kernel maps
 * and zeroes each of its pages on first touch. Assembling a 1 GiB download
 * into a fresh buffer took an agent 1.25 s of CPU (--cpu-prof, large-model
 * bench), most of it page faults; downloading into reused memory took the
 * three agents' download phase from 3.7-4.1 s to 3.0-3.3 s on two cores.
 * So the memory of a result the site took becomes the next download's
 * (SpareBuffer), when it is the agent's to reuse: its own copy of the
 * encoding, or buffers the trainer handed over (transferTensors).
 */

/** Below this a buffer is neither rounded up nor kept: its page faults cost little. */
const REUSE_MIN_BYTES = COLLECT_BEFORE_BYTES;
/** Model buffers are allocated in whole MiB, so that the next round's model, a few bytes longer (a round number has more digits), still fits. */
const ALLOCATION_STEP = 1024 * 1024;

/** A buffer of `size` bytes for a model's encoding, with room to be reused for one slightly longer. */
export function allocateModelBuffer(size: number): Buffer {
  if (size < REUSE_MIN_BYTES) return Buffer.allocUnsafe(size);
  return Buffer.allocUnsafe(Math.ceil(size / ALLOCATION_STEP) * ALLOCATION_STEP).subarray(0, size);
}

/**
 * Moves the ArrayBuffers under `data`'s tensors to the agent, as postMessage
 * moves a transfer list: the result's tensors view them at their new home and
 * the caller's arrays become empty (length 0). Handing a result over
 * (SubmitOptions.takeOwnership) is then explicit: the caller cannot change
 * bytes the agent is uploading, nor read memory the next task's data is
 * written into. A buffer that cannot move (Node's shared pool of small
 * Buffers, shared memory) is copied instead.
 */
export function transferTensors(data: DataExchange): DataExchange {
  // Where every view lies, read before anything moves: a moved buffer's views all report 0 bytes at offset 0.
  const views = data.tensors.map(({ data: view }) => ({ buffer: view.buffer, byteOffset: view.byteOffset, byteLength: view.byteLength, view }));
  const moved = new Map<ArrayBuffer, ArrayBuffer>();
  const tensors = data.tensors.map((tensor, index) => {
    const { buffer, byteOffset, byteLength, view } = views[index]!;
    let home = moved.get(buffer as ArrayBuffer);
    if (!home) {
      // Shared memory cannot change hands, and an empty buffer holds nothing to move: the view's bytes are copied.
      if (!(buffer instanceof ArrayBuffer) || buffer.byteLength === 0) return { ...tensor, data: Buffer.from(view) };
      home = movedOrCopied(buffer);
      moved.set(buffer, home);
    }
    return { ...tensor, data: Buffer.from(home, byteOffset, byteLength) };
  });
  return { ...data, tensors };
}

/** The buffer moved to a new home; or copied, where the runtime will not move it (Node marks its pool of small Buffers untransferable: Node 20 copies it, later versions may refuse). */
function movedOrCopied(buffer: ArrayBuffer): ArrayBuffer {
  try {
    return structuredClone(buffer, { transfer: [buffer] });
  } catch {
    return buffer.slice(0);
  }
}

/**
 * One buffer kept for the next download: the largest in memory under a
 * result the site acknowledged. It adds nothing to the agent's peak (the
 * result held that memory during the round), but an idle agent holds it,
 * about one model, until its next download or until the agent is dropped.
 */
export class SpareBuffer {
  private spare: ArrayBuffer | undefined;

  /**
   * Keeps the memory of an acknowledged result's encoding. Only for an
   * encoding that is the agent's: its own copy, its own filtered or masked
   * tensors, or buffers moved to it by transferTensors. Every chunk of it has
   * been sent by then (the site acknowledges a result only once its upload is
   * complete), so nothing reads the memory any more.
   */
  keep(encoding: StreamedEncoding): void {
    let largest: ArrayBuffer | undefined;
    for (const piece of encoding.pieces) {
      if (!(piece instanceof Uint8Array) || !(piece.buffer instanceof ArrayBuffer)) continue;
      if (piece.buffer.byteLength >= REUSE_MIN_BYTES && piece.buffer.byteLength > (largest?.byteLength ?? 0)) largest = piece.buffer;
    }
    if (largest) this.spare = largest;
  }

  /** A buffer of `size` bytes in the spare's memory, when it is large enough; the spare is let go either way. */
  take(size: number): Buffer | undefined {
    const spare = this.spare;
    this.spare = undefined;
    return spare && spare.byteLength >= size ? Buffer.from(spare, 0, size) : undefined;
  }
}
