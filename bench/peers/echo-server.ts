// The raw grpc-js echo peer, in its own process like a Campfire agent would be.
import { startEchoServer } from "../lib/raw-echo.js";

const server = await startEchoServer();
console.log(`ready ${server.port}`);
process.stdin.on("end", () => process.exit(0)).resume();
