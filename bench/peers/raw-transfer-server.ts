// The servers of the model-transfer baselines (bench/lib/raw-transfer.ts), in a
// process of their own so that the site's RSS stays the site's: the encoding
// of a MODEL_BYTES model, served over raw grpc-js and plain TCP.
// Prints "ready <grpc port> <tcp port>".
import { encodeDataExchange } from "../../services/shared/payload.js";
import { makeModel, weights } from "../lib/model.js";
import { startGrpcTransferServer, startTcpTransferServer } from "../lib/raw-transfer.js";
import { DEFAULT_HEAP_HEADROOM_MB, tuneHeapGrowth } from "../../services/shared/memory.js";

// The same V8 tuning as the campfire site process the baseline stands for (services/shared/memory.ts).
tuneHeapGrowth(DEFAULT_HEAP_HEADROOM_MB * 1024 * 1024);

const encoded = encodeDataExchange(weights(makeModel(Number(process.env.MODEL_BYTES))));
const grpc = await startGrpcTransferServer(encoded);
const tcp = await startTcpTransferServer(encoded);
console.log(`ready ${grpc.port} ${tcp.port} ${encoded.length}`);
process.stdin
  .on("end", () => {
    grpc.stop();
    tcp.stop();
    process.exit(0);
  })
  .resume();
