// The Node.js `ws` echo server (with bufferutil), a peer for
// `switchboard-bench compare --peers`. Prints `listening on ADDR`.
import { WebSocketServer } from 'ws';

const server = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 16 << 20 });
server.on('listening', () => {
  const { address, port } = server.address();
  console.log(`listening on ${address}:${port}`);
});
server.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
process.on('SIGTERM', () => process.exit(0));
