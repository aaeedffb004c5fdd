// Every demo page against the real server, in headless Chromium: two contexts
// chatting, a lock dimmed in the other context and freed when the first one
// closes, a progress bar reaching 100% from backend pushes, and the client
// library reconnecting after a server restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, copyFileSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { startServer, startRedis, launch, shoot, root, target, APPS } from './support.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function open(path) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
  const page = await context.newPage();
  page.on('pageerror', (error) => assert.fail(`page error on ${path}: ${error.message}`));
  await page.goto(server.url + path);
  return { context, page };
}

test('echo: a message comes back into the log', async () => {
  const { context, page } = await open('/echo.html');
  await page.locator('#status.open').waitFor();
  await page.fill('#input', 'hello from chromium');
  await page.click('#send');
  await page.locator('#log .in', { hasText: 'hello from chromium' }).waitFor();
  await shoot(page, 'echo');
  await page.click('#quit');
  await page.locator('#status.closed').waitFor();
  await context.close();
});

test('commands: the bot answers, and bye ends the connection', async () => {
  const { context, page } = await open('/commands.html');
  await page.locator('#status.open').waitFor();
  await page.click('.chip:text-is("hello")');
  await page.locator('#log .in', { hasText: 'hello human' }).waitFor();
  await page.fill('#input', 'date');
  await page.press('#input', 'Enter');
  await page.locator('#log .in', { hasText: /today is \d{4}\.\d{2}\.\d{2}/ }).waitFor();
  await shoot(page, 'commands');
  await page.click('.chip:text-is("bye")');
  await page.locator('#status.closed', { hasText: '1000' }).waitFor();
  await context.close();
});

test('chat: two browser contexts talk in a room', async () => {
  const alice = await open('/chat.html');
  const bob = await open('/chat.html');
  for (const [who, name] of [[alice, 'alice'], [bob, 'bob']]) {
    await who.page.locator('#status.open').waitFor();
    await who.page.fill('#nick', name);
    await who.page.click('#join button');
    await who.page.locator('#where', { hasText: `in #lobby as ${name}` }).waitFor();
  }
  await alice.page.locator('#members li', { hasText: 'bob' }).waitFor();
  await alice.page.fill('#text', 'hi bob!');
  await alice.page.press('#text', 'Enter');
  await bob.page.locator('#log .in', { hasText: 'alice: hi bob!' }).waitFor();
  await bob.page.fill('#text', 'hello alice');
  await bob.page.press('#text', 'Enter');
  await alice.page.locator('#log .in', { hasText: 'bob: hello alice' }).waitFor();
  await shoot(alice.page, 'chat-alice');
  await shoot(bob.page, 'chat-bob');
  await bob.context.close();
  await alice.page.locator('#log .sys', { hasText: 'bob disconnected' }).waitFor();
  await alice.context.close();
});

test('chat: a page on node A and a page on node B talk through Redis', async () => {
  const redis = await startRedis();
  const cluster = (node) => () => `[cluster]\nredis = "${redis.url}"\nnode_id = "${node}"\nheartbeat = "100ms"\nnode_timeout = "1s"\n${APPS}`;
  const nodeA = await startServer(0, cluster('a'));
  const nodeB = await startServer(0, cluster('b'));
  try {
    const openOn = async (node) => {
      const context = await browser.newContext({ viewport: { width: 1000, height: 760 } });
      const page = await context.newPage();
      page.on('pageerror', (error) => assert.fail(`page error: ${error.message}`));
      await page.goto(node.url + '/chat.html');
      return { context, page };
    };
    const alice = await openOn(nodeA);
    const bob = await openOn(nodeB);
    for (const [who, name] of [[alice, 'alice'], [bob, 'bob']]) {
      await who.page.locator('#status.open').waitFor();
      await who.page.fill('#nick', name);
      await who.page.click('#join button');
      await who.page.locator('#where', { hasText: `in #lobby as ${name}` }).waitFor();
    }
    await bob.page.fill('#text', 'hello from node B');
    await bob.page.press('#text', 'Enter');
    await alice.page.locator('#log .in', { hasText: 'bob: hello from node B' }).waitFor();
    await alice.page.fill('#text', 'hi from node A');
    await alice.page.press('#text', 'Enter');
    await bob.page.locator('#log .in', { hasText: 'alice: hi from node A' }).waitFor();
    // The member list on node A names the member on node B.
    await alice.page.locator('#members li', { hasText: 'bob' }).waitFor();
    await shoot(alice.page, 'chat-cluster-node-a');
    await shoot(bob.page, 'chat-cluster-node-b');
    await bob.context.close();
    await alice.page.locator('#log .sys', { hasText: 'bob disconnected' }).waitFor();
    await alice.context.close();
  } finally {
    await nodeA.stop();
    await nodeB.stop();
    await redis.stop();
  }
});

test('chat: a reload with a new build keeps both pages open and talking', async () => {
  // The chat app from a copy of its plugin, so the test can change the file.
  const reloadable = await startServer(0, (dir) => {
    copyFileSync(join(target, 'libchat.so'), join(dir, 'libchat.so'));
    return `[[app]]\npath = "/chat"\nplugin = ${JSON.stringify(join(dir, 'libchat.so'))}\n`;
  });
  try {
    const pages = [];
    for (const name of ['ana', 'ben']) {
      const context = await browser.newContext();
      const page = await context.newPage();
      page.on('pageerror', (error) => assert.fail(`page error: ${error.message}`));
      await page.goto(reloadable.url + '/chat.html');
      await page.locator('#status.open').waitFor();
      // Every status the client library reports from now on.
      await page.evaluate(() => {
        window.statuses = [];
        window.sb.addEventListener('status', (event) => window.statuses.push(event.detail.status));
      });
      await page.fill('#nick', name);
      await page.click('#join button');
      await page.locator('#where', { hasText: `in #lobby as ${name}` }).waitFor();
      pages.push({ context, page });
    }
    const [ana, ben] = pages;
    // A new build of the plugin (other bytes, same code), then a reload.
    appendFileSync(join(reloadable.dir, 'libchat.so'), `rebuilt ${Date.now()}`);
    const reload = spawnSync(join(target, 'switchboard'), ['--config', reloadable.config, 'reload'], { encoding: 'utf8' });
    assert.equal(reload.status, 0, reload.stdout + reload.stderr);
    assert.match(reload.stdout, /reloaded: \/chat \(migrate\)/);
    await ana.page.fill('#text', 'after the reload');
    await ana.page.press('#text', 'Enter');
    await ben.page.locator('#log .in', { hasText: 'ana: after the reload' }).waitFor();
    for (const { page } of pages) {
      assert.deepEqual(await page.evaluate(() => window.statuses), [], 'the connection never left open');
      assert.equal(await page.locator('#status').getAttribute('class'), 'status open');
    }
    await shoot(ben.page, 'chat-after-reload');
    for (const { context } of pages) await context.close();
  } finally {
    await reloadable.stop();
  }
});

test('chat: the room comes from the page URL (the app is mounted on /chat/{room})', async () => {
  const pages = [];
  for (const name of ['dora', 'emil']) {
    const { context, page } = await open('/chat.html?room=kitchen');
    await page.locator('#status.open').waitFor();
    // No join form needed: the server put the connection in #kitchen.
    await page.locator('#where', { hasText: 'in #kitchen' }).waitFor();
    assert.equal(await page.inputValue('#room'), 'kitchen');
    await page.fill('#nick', name);
    await page.click('#join button');
    await page.locator('#where', { hasText: `as ${name}` }).waitFor();
    pages.push({ context, page });
  }
  const [dora, emil] = pages;
  await dora.page.fill('#text', 'from the url');
  await dora.page.press('#text', 'Enter');
  await emil.page.locator('#log .in', { hasText: 'dora: from the url' }).waitFor();
  await shoot(emil.page, 'chat-room-from-url');
  for (const { context } of pages) await context.close();
});

test('echo over https and wss, with no proxy', async () => {
  // The certificate is made by the Rust side of the test run (rcgen).
  const cert = process.env.SWITCHBOARD_TEST_TLS_CERT;
  const key = process.env.SWITCHBOARD_TEST_TLS_KEY;
  assert.ok(cert && key, 'the test certificate is passed in the environment');
  const secure = await startServer(0, undefined, { cert, key });
  try {
    assert.match(secure.url, /^https:\/\//);
    // The certificate is self-signed: this context accepts it.
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    page.on('pageerror', (error) => assert.fail(`page error: ${error.message}`));
    await page.goto(secure.url + '/echo.html');
    await page.locator('#status.open').waitFor();
    assert.equal(await page.evaluate(() => window.sb.url.slice(0, 6)), 'wss://');
    await page.fill('#input', 'hello over wss');
    await page.click('#send');
    await page.locator('#log .in', { hasText: 'hello over wss' }).waitFor();
    await shoot(page, 'echo-over-wss');
    await context.close();
  } finally {
    await secure.stop();
  }
});

test('index: every app is listed from the server, with no console error', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('requestfailed', (request) => problems.push(`failed: ${request.url()}`));
  page.on('response', (response) => {
    if (response.status() >= 400) problems.push(`${response.status()}: ${response.url()}`);
  });
  await page.goto(server.url + '/');
  await page.locator('tr[data-path="/hub"]').waitFor();
  const paths = await page.locator('#apps tr td:first-child').allTextContents();
  assert.deepEqual(paths, ['/echo', '/commands', '/chat, /chat/{room}', '/locks', '/progress', '/clock', '/hub, /hub/web']);
  assert.match(await page.locator('#footer').textContent(), /^Switchboard \d+\.\d+\.\d+ · 7 apps$/);
  for (const [path, page_] of [['/echo', '/echo.html'], ['/chat', '/chat.html'], ['/clock', '/clock.html'], ['/locks', '/locks.html']]) {
    assert.equal(await page.locator(`tr[data-path="${path}"] a`).getAttribute('href'), page_);
  }
  assert.equal(await page.locator('tr[data-path="/hub"] a').count(), 0, 'the hub has no demo page');
  // Give late requests (an icon) the time to fail if they are going to.
  await page.waitForLoadState('networkidle');
  await shoot(page, 'index');
  assert.deepEqual(problems, []);
  await context.close();
});

test('admin: apps with live connection counts and rates, and a reload from the button', async () => {
  const context = await browser.newContext({ viewport: { width: 1100, height: 800 } });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console: ${message.text()}`);
  });
  await page.goto(server.url + '/_/admin');
  await page.locator('tr[data-app="/echo"]').waitFor();
  assert.equal(await page.locator('#apps tr').count(), 7);
  assert.match(await page.locator('tr[data-app="/echo"] .plugin').textContent(), /^echo \d+\.\d+\.\d+$/);
  assert.equal(await page.locator('#status').textContent(), 'ok');
  // A client sending on /echo shows as a connection and as messages per second.
  const other = await open('/echo.html');
  await other.page.locator('#status.open').waitFor();
  await page.locator('tr[data-app="/echo"] .conns', { hasText: /^[1-9]/ }).waitFor();
  const sending = setInterval(() => other.page.click('#send').catch(() => {}), 50);
  try {
    await other.page.fill('#input', 'tick');
    await page.locator('tr[data-app="/echo"] .in', { hasText: /^[1-9]/ }).waitFor({ timeout: 15000 });
  } finally {
    clearInterval(sending);
  }
  assert.equal(await page.locator('tr[data-app="/echo"] canvas').count(), 1);
  await page.click('#reload');
  await page.locator('#reload-result', { hasText: /^reloaded\n/ }).waitFor();
  assert.match(await page.locator('#reload-result').textContent(), /unchanged: .*\/echo/);
  await shoot(page, 'admin');
  assert.deepEqual(problems, []);
  await other.context.close();
  await context.close();
});

test('clock: ticks arrive, pause stops them and resume brings them back', async () => {
  const { context, page } = await open('/clock.html');
  await page.locator('#status.open').waitFor();
  await page.locator('#tick', { hasText: /^[0-9]+$/ }).waitFor();
  await page.click('#pause');
  await page.locator('#subscribed', { hasText: 'paused' }).waitFor();
  const paused = await page.locator('#tick').textContent();
  await page.waitForTimeout(400);
  assert.equal(await page.locator('#tick').textContent(), paused, 'no tick while paused');
  await page.click('#resume');
  await page.locator('#subscribed', { hasText: 'subscribed' }).waitFor();
  await page.waitForFunction((before) => document.getElementById('tick').textContent !== before, paused);
  await shoot(page, 'clock');
  await context.close();
});

test('locks: a record held in one context is dimmed in the other and freed when it closes', async () => {
  const anna = await open('/locks.html');
  await anna.page.locator('#status.open').waitFor();
  await anna.page.fill('#user', 'Anna');
  await anna.page.click('#who button');
  await anna.page.locator('tr.mine').first().waitFor();
  assert.equal(await anna.page.locator('tr.mine').count(), 10);

  const ben = await open('/locks.html');
  await ben.page.locator('#status.open').waitFor();
  await ben.page.fill('#user', 'Ben');
  await ben.page.selectOption('#page', '5');
  await ben.page.click('#who button');
  // Titles 6-10 are Anna's, 11-15 are free and become Ben's.
  await ben.page.locator('tr.held', { hasText: 'Anna' }).nth(4).waitFor();
  await ben.page.locator('tr.mine').nth(4).waitFor();
  assert.equal(await ben.page.locator('tr.held').count(), 5);
  assert.equal(await ben.page.locator('tr.mine').count(), 5);
  assert.equal(await ben.page.locator('tr[data-id="isbn-06"] .who').textContent(), 'Anna');
  await shoot(ben.page, 'locks-held');

  await anna.context.close();
  await ben.page.locator('tr.held').first().waitFor({ state: 'detached' });
  assert.equal(await ben.page.locator('tr.mine').count(), 10, 'Ben inherits what Anna held');
  await shoot(ben.page, 'locks-freed');
  await ben.context.close();
});

test('progress: the bar reaches 100% from pushes, and from a backend script', async () => {
  const { context, page } = await open('/progress.html');
  await page.locator('#status.open').waitFor();
  await page.click('#start');
  await page.locator('#percent', { hasText: '100%' }).waitFor();
  assert.match(await page.locator('#bar').getAttribute('class'), /done/);
  await shoot(page, 'progress-done');

  // A real backend script, given the id the page shows.
  const id = (await page.locator('#conn-id').textContent()).trim();
  const script = spawn('python3', [join(root, 'examples/backend/progress.py'), id, 'from-python'], {
    env: { ...process.env, SWITCHBOARD_URL: server.url, STEPS: '4', STEP_DELAY: '0.05' },
    stdio: 'inherit',
  });
  const [code] = await once(script, 'exit');
  assert.equal(code, 0);
  await page.locator('#job-text', { hasText: 'from-python: step 4 of 4' }).waitFor();
  assert.equal(await page.locator('#percent').textContent(), '100%');

  // Cancel a demo job midway: the bar stops short of 100%.
  await page.click('#start');
  await page.locator('#percent', { hasText: /^(20|40)%$/ }).waitFor();
  await page.click('#cancel');
  await page.locator('#job-text', { hasText: 'cancelled' }).waitFor();
  await page.waitForTimeout(600);
  assert.notEqual(await page.locator('#percent').textContent(), '100%');
  await shoot(page, 'progress-cancelled');
  await context.close();
});

test('the client library reconnects after the server restarts', async () => {
  const { context, page } = await open('/echo.html');
  await page.locator('#status.open').waitFor();
  const port = server.port;
  await server.stop();
  await page.locator('#status.reconnecting').waitFor();
  await shoot(page, 'reconnecting');
  // Sent while disconnected: queued, then delivered in order after the reconnect.
  for (const text of ['queued 1', 'queued 2', 'queued 3']) {
    await page.fill('#input', text);
    await page.click('#send');
  }
  // A second client with a queue of two: the oldest message is dropped and reported.
  const dropped = page.evaluate(async (url) => {
    const { Switchboard } = await import('/switchboard.js');
    const small = new Switchboard(url, { queueLimit: 2, minDelay: 100 });
    const lost = [];
    small.addEventListener('dropped', (e) => lost.push(e.detail.data));
    const echoed = [];
    small.addEventListener('message', (e) => echoed.push(e.detail.data));
    for (const text of ['a', 'b', 'c']) small.send(text);
    await new Promise((done) => {
      const check = setInterval(() => { if (echoed.length === 2) { clearInterval(check); done(); } }, 50);
    });
    small.close();
    return { lost, echoed };
  }, server.url.replace('http', 'ws') + '/echo');

  server = await startServer(port);
  await page.locator('#status.open').waitFor({ timeout: 20000 });
  for (const text of ['queued 1', 'queued 2', 'queued 3']) {
    await page.locator('#log .in', { hasText: text }).waitFor();
  }
  const echoes = await page.locator('#log .in').allTextContents();
  assert.deepEqual(echoes.slice(-3), ['queued 1', 'queued 2', 'queued 3'], 'queued messages arrive in order');
  assert.deepEqual(await dropped, { lost: ['a'], echoed: ['b', 'c'] });
  await page.fill('#input', 'after the restart');
  await page.click('#send');
  await page.locator('#log .in', { hasText: 'after the restart' }).waitFor();
  await context.close();
});
