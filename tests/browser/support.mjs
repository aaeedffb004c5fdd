// Support for the browser tests: the real switchboard binary with the real
// plugins and the real pages, on 127.0.0.1, and Debian's Chromium driven by
// playwright-core (no browser is downloaded).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { createServer, connect } from 'node:net';
import { chromium } from 'playwright-core';

export const root = resolve(import.meta.dirname, '../..');
export const target = process.env.SWITCHBOARD_TARGET_DIR ?? join(root, 'target/debug');
export const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const screenshots = join(root, 'target/browser-screenshots');
mkdirSync(screenshots, { recursive: true });

export const APPS = `
[[app]]
path = "/echo"
plugin = "echo"

[[app]]
path = "/commands"
plugin = "commands"

[[app]]
paths = ["/chat", "/chat/{room}"]
plugin = "chat"

[[app]]
path = "/locks"
plugin = "locks"

[[app]]
path = "/progress"
plugin = "progress"
[app.config]
demo_jobs = true
demo_steps = 5
demo_step_ms = 150

[[app]]
path = "/clock"
plugin = "clock"
[app.config]
interval_ms = 100

[[app]]
paths = ["/hub", "/hub/web"]
plugin = "hub"
`;

/**
 * Starts the server (on `port`, 0 for any) and resolves with {url, port, config, dir, stop}.
 * `apps` replaces the apps of the config (given the test directory, where
 * plugin copies may go).
 */
export async function startServer(port = 0, apps = () => APPS, tls = null) {
  const binary = join(target, 'switchboard');
  if (!existsSync(binary)) throw new Error(`${binary} is missing: run cargo build --workspace first`);
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-browser-'));
  const config = join(dir, 'switchboard.toml');
  writeFileSync(config, `[server]\nlisten = "127.0.0.1:${port}"\nplugin_dir = ${JSON.stringify(target)}\nruntime_dir = ${JSON.stringify(join(dir, 'run'))}\nstatic_dir = ${JSON.stringify(join(root, 'examples/web'))}\n${tls ? `[server.tls]\ncert = ${JSON.stringify(tls.cert)}\nkey = ${JSON.stringify(tls.key)}\n` : ''}${apps(dir)}`);
  const child = spawn(binary, ['--config', config], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, SWITCHBOARD_LOG: 'warn' } });
  const lines = createInterface({ input: child.stdout });
  const [line] = await Promise.race([
    once(lines, 'line'),
    once(child, 'exit').then(([code]) => { throw new Error(`switchboard exited with ${code} before listening`); }),
  ]);
  const url = line.replace('switchboard listening on ', '');
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
  };
  return { url, port: Number(new URL(url).port), config, dir, stop };
}

/** A free loopback port. */
async function freePort() {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

/**
 * Starts Debian's redis-server on a port of its own, nothing saved to disk;
 * resolves with {url, stop} once it accepts connections.
 */
export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-redis-'));
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
    const ready = await new Promise((resolve) => {
      const socket = connect(port, '127.0.0.1', () => { socket.end(); resolve(true); });
      socket.on('error', () => resolve(false));
    });
    if (ready) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  };
  return { url: `redis://127.0.0.1:${port}`, stop };
}

/** Launches headless Chromium with the flags this sandbox needs. */
export function launch() {
  return chromium.launch({
    executablePath: chromiumPath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

/** Saves a screenshot of `page` as target/browser-screenshots/<name>.png. */
export function shoot(page, name) {
  return page.screenshot({ path: join(screenshots, `${name}.png`), fullPage: true });
}
