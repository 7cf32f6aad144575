import type { UploadArtifactRequest } from "../../../gen/campfire/admin/v1/session_service.js";
import type { Identity } from "../../security/identity.js";
import { CHUNK_BYTES } from "../../shared/payload.js";
import { InvalidUpload, UploadStalled } from "../artifacts/errors.js";
import type { ArtifactStore, StoredArtifact } from "../artifacts/store.js";
import { RefusedMessage } from "../transport/decoding.js";
import type { AdminCall } from "./admin-call.js";

/** An upload on which no message arrives for this long is ended with DEADLINE_EXCEEDED. */
export const UPLOAD_IDLE_MS = 60_000;

/** Whose partial uploads a caller resumes: its own, by name and organisation. */
export function uploadOwner(caller: Identity): string {
  return `${caller.org}/${caller.name}`;
}

/**
 * Reads one UploadArtifact stream into the store: the header first, then
 * chunks in order, each written before the next is read (the stream's flow
 * control holds a fast client back). Ends with the stored artifact, or throws
 * the typed error the caller gets: a stall past `idleMs`, the caller going
 * away (`gone`), or a newer upload taking over end it too, keeping the bytes
 * received for a resume.
 */
export async function receiveArtifact(
  messages: AsyncIterable<UploadArtifactRequest | RefusedMessage>,
  store: ArtifactStore,
  admin: AdminCall,
  gone: AbortSignal,
  idleMs = UPLOAD_IDLE_MS,
): Promise<StoredArtifact> {
  const iterator = messages[Symbol.asyncIterator]();
  const first = await next(iterator, gone, idleMs);
  if (first === undefined) throw new InvalidUpload("header: the upload ended before its header; send the header as the first message");
  if (first.body?.$case !== "header") throw new InvalidUpload(`header: the first message must be the header, got ${first.body ? first.body.$case : "an empty message"}`);
  const header = first.body.value;
  admin.concerns({ sha256: header.sha256 });
  const begun = await store.begin(header, uploadOwner(admin.caller));
  if (!("write" in begun)) return begun;
  const upload = begun;
  const startedAt = upload.receivedBytes;
  try {
    const stop = AbortSignal.any([gone, upload.signal]);
    for (let index = 1; ; index++) {
      const message = await next(iterator, stop, idleMs);
      admin.concerns({ sha256: header.sha256, bytes: upload.receivedBytes - startedAt });
      if (message === undefined) break;
      if (message.body?.$case !== "chunk") throw new InvalidUpload(`header: only the first message may be a header; message ${index} is one`);
      const chunk = message.body.value;
      if (chunk.length > CHUNK_BYTES) throw new InvalidUpload(`chunk: ${chunk.length} bytes, more than the ${CHUNK_BYTES} a chunk may hold`);
      await upload.write(chunk);
    }
    const stored = await upload.finish();
    admin.concerns({ sha256: header.sha256, bytes: upload.receivedBytes - startedAt });
    return stored;
  } finally {
    await upload.abandon();
  }
}

/** The next message, or undefined at the stream's end; throws when `signal` fires or nothing comes for `idleMs`. */
async function next(iterator: AsyncIterator<UploadArtifactRequest | RefusedMessage>, signal: AbortSignal, idleMs: number): Promise<UploadArtifactRequest | undefined> {
  signal.throwIfAborted();
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  try {
    const result = await Promise.race([
      iterator.next(),
      new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new UploadStalled(`no message arrived for ${idleMs / 1000} s; the bytes received so far are kept, resume the upload`)), idleMs);
        onAbort = () => reject(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
      }),
    ]);
    if (result.done) return undefined;
    const message = result.value;
    if (message instanceof RefusedMessage) {
      throw new InvalidUpload(message.reason === "oversized" ? `chunk: ${message.description}; a chunk holds at most ${CHUNK_BYTES} bytes` : message.description);
    }
    return message;
  } finally {
    clearTimeout(timer);
    if (onAbort) signal.removeEventListener("abort", onAbort);
  }
}
