// Starts the Node reference server (@durable-streams/server), file-backed, for the benchmark.
// Env: DS_SERVER_MODULE (path to its dist/index.js), PORT, DATA_DIR.
const { DurableStreamTestServer } = await import(process.env.DS_SERVER_MODULE);
const server = new DurableStreamTestServer({
  port: Number(process.env.PORT),
  dataDir: process.env.DATA_DIR,
  longPollTimeout: 30_000,
  compression: false,
});
await server.start();
console.log(`reference server on ${process.env.PORT}`);
process.on("SIGTERM", async () => {
  await server.stop();
  process.exit(0);
});
