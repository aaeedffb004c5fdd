// permessage-deflate with Node's `ws` (perMessageDeflate), and in Chromium
// through a demo page: every parameter set negotiates as asked, messages
// arrive intact, and the bytes on the wire shrink.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import WebSocket from 'ws';
import { startServer, launch } from './support.mjs';

let server;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server?.stop();
});

function chatMessage(i) {
  return JSON.stringify({
    type: 'message', room: 'lobby', nick: `guest-${i % 5}`,
    text: 'the quick brown fox jumps over the lazy dog '.repeat(1 + (i % 20)),
  });
}

/** A dashboard update of 40 metrics (about 3 KB), above the server's 1 KiB threshold. */
function dashboardUpdate(i) {
  const names = ['cpu.user', 'cpu.system', 'mem.used', 'net.rx', 'net.tx'];
  const series = Array.from({ length: 40 }, (_, k) => ({
    name: names[k % 5], host: `web-${Math.floor(k / 5)}`, value: ((k * 7919 + i * 31) % 10000) / 100, unit: 'percent',
  }));
  return JSON.stringify({ type: 'metrics', at: 1764400000000 + i, series });
}

/** Opens /echo with `perMessageDeflate`; resolves with {ws, answer} (the 101's extensions header). */
async function open(perMessageDeflate) {
  const ws = new WebSocket(server.url.replace('http', 'ws') + '/echo', { perMessageDeflate });
  let answer;
  ws.on('upgrade', (response) => { answer = response.headers['sec-websocket-extensions']; });
  await once(ws, 'open');
  return { ws, answer };
}

/** Sends `messages` one at a time, each awaited back; returns the bytes the socket read. */
async function echoAll(ws, messages) {
  for (const message of messages) {
    ws.send(message);
    const [data] = await once(ws, 'message');
    assert.equal(data.toString(), message);
  }
  return ws._socket.bytesRead;
}

test('node ws: every parameter set negotiates and messages arrive intact', async () => {
  const cases = [
    [true, 'permessage-deflate; server_no_context_takeover; client_max_window_bits=12'],
    [{ serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 0 },
      'permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=12'],
    [{ serverMaxWindowBits: 9, clientMaxWindowBits: 9, threshold: 0 },
      'permessage-deflate; server_no_context_takeover; server_max_window_bits=9; client_max_window_bits=9'],
    [{ serverMaxWindowBits: 13, clientMaxWindowBits: 11, threshold: 0 },
      'permessage-deflate; server_no_context_takeover; server_max_window_bits=12; client_max_window_bits=11'],
  ];
  const messages = Array.from({ length: 60 }, (_, i) => chatMessage(i));
  for (const [options, expected] of cases) {
    const { ws, answer } = await open(options);
    assert.equal(answer, expected);
    await echoAll(ws, messages);
    ws.close();
    await once(ws, 'close');
  }
});

test('node ws: the same dashboard traffic takes far fewer bytes compressed, both ways', async () => {
  const messages = Array.from({ length: 100 }, (_, i) => dashboardUpdate(i));
  const plain = await open(false);
  assert.equal(plain.answer, undefined, 'not offered, not answered');
  const plainBytes = await echoAll(plain.ws, messages);
  const packed = await open({ threshold: 0 });
  const packedBytes = await echoAll(packed.ws, messages);
  assert.ok(packedBytes * 4 < plainBytes, `compressed ${packedBytes} bytes read against ${plainBytes}`);
  const [sentPlain, sentPacked] = [plain.ws._socket.bytesWritten, packed.ws._socket.bytesWritten];
  assert.ok(sentPacked * 4 < sentPlain, `compressed ${sentPacked} bytes sent against ${sentPlain}`);
  plain.ws.close();
  packed.ws.close();
});

test('chromium: the demo page negotiates permessage-deflate and a long message arrives intact', async () => {
  const browser = await launch();
  try {
    const page = await browser.newPage();
    await page.goto(server.url + '/echo.html');
    await page.locator('#status.open').waitFor();
    const extensions = await page.evaluate(() => window.sb.socket.extensions);
    assert.match(extensions, /^permessage-deflate/);
    const long = 'compressed in both directions; '.repeat(300);
    await page.fill('#input', long);
    await page.click('#send');
    await page.locator('#log .in', { hasText: long }).waitFor();
  } finally {
    await browser.close();
  }
});
