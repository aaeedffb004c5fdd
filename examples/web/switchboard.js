// Switchboard's browser client: a WebSocket to one app path that reconnects by
// itself, with JSON helpers, status events and a bounded send queue.
//
//   import { Switchboard } from '/switchboard.js';
//   const sb = new Switchboard('/chat', { onreconnect: () => sb.sendJson({ type: 'join', room }) });
//   sb.onJson((message) => console.log(message));
//   sb.addEventListener('status', (e) => console.log(e.detail.status));
//   sb.sendJson({ type: 'nick', nick: 'alice' });
//
// Status: 'connecting' -> 'open' -> 'reconnecting' (after an unexpected close,
// with `attempt` and `delay`) -> 'open' ... or 'closed' (after close(), after a
// normal closure by the server, or when reconnecting is off; with the close
// `code` and `reason`).
//
// While not open, send()/sendJson() queue messages (at most `queueLimit`); they
// go out, in order, once the socket opens. When the queue is full the OLDEST
// message is dropped and a 'dropped' event carries it, so the newest state
// wins (right for updates, wrong for commands that must all arrive: watch the
// event, or set queueLimit to 0 to drop everything sent while disconnected).

const DEFAULTS = {
  reconnect: true,      // reconnect after an unexpected close
  // Which server closes are unexpected: by default all but a normal closure
  // (1000), so a shutdown (1001), a crash (1006) or an error (1011) reconnect,
  // and an app that says goodbye (1000) is left alone.
  shouldReconnect: (code) => code !== 1000,
  minDelay: 500,        // first reconnect delay, ms
  maxDelay: 30000,      // longest reconnect delay, ms
  factor: 2,            // delay growth per failed attempt
  jitter: true,         // full jitter: wait a random time in [0, delay]
  queueLimit: 100,      // messages kept while not connected
  protocols: undefined, // subprotocols to offer
  onreconnect: undefined, // called after every successful reconnect (not the first open)
  // How to find the connection id in the app's messages: the example apps send
  // {type: "welcome", id} and the hub {opcode: "ready", uuid}.
  idFrom: (message) => (message && (message.type === 'welcome' ? message.id : message.opcode === 'ready' ? message.uuid : undefined)),
};

/** The ws:// or wss:// URL of an app path on the page's own server. */
export function appUrl(path) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}`;
}

export class Switchboard extends EventTarget {
  constructor(path, options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    this.url = /^wss?:/.test(path) ? path : appUrl(path);
    this.queue = [];
    this.attempt = 0;
    this.opened = false;
    this.stopped = false;
    this.id = undefined;
    this.status = 'connecting';
    this.timer = undefined;
    this.#connect();
  }

  /** Sends text or binary now, or queues it until the connection is open. */
  send(data) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(data);
      return;
    }
    if (this.options.queueLimit <= 0) {
      this.#emit('dropped', { data });
      return;
    }
    this.queue.push(data);
    while (this.queue.length > this.options.queueLimit) {
      this.#emit('dropped', { data: this.queue.shift() });
    }
  }

  /** Sends a value as JSON text. */
  sendJson(value) {
    this.send(JSON.stringify(value));
  }

  /** Calls handler(value, event) for every text message that is valid JSON. */
  onJson(handler) {
    this.addEventListener('json', (event) => handler(event.detail.value, event));
  }

  /** Closes for good: no reconnecting. */
  close(code = 1000, reason = '') {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) {
      this.socket.close(code, reason);
    } else {
      this.#setStatus('closed', { code, reason });
    }
  }

  #connect() {
    this.#setStatus(this.opened ? 'reconnecting' : 'connecting', { attempt: this.attempt });
    const socket = new WebSocket(this.url, this.options.protocols);
    this.socket = socket;
    socket.onopen = () => {
      const reconnected = this.opened;
      this.opened = true;
      this.attempt = 0;
      this.#setStatus('open', {});
      for (const data of this.queue.splice(0)) {
        socket.send(data);
      }
      this.#emit('open', { reconnected });
      if (reconnected && this.options.onreconnect) {
        this.options.onreconnect(this);
      }
    };
    socket.onmessage = (event) => {
      this.#emit('message', { data: event.data });
      if (typeof event.data !== 'string') {
        return;
      }
      let value;
      try {
        value = JSON.parse(event.data);
      } catch {
        return;
      }
      const id = this.options.idFrom(value);
      if (id !== undefined) {
        this.id = id;
      }
      this.#emit('json', { value });
    };
    socket.onclose = (event) => {
      this.#emit('close', { code: event.code, reason: event.reason });
      if (this.stopped || !this.options.reconnect || !this.options.shouldReconnect(event.code)) {
        this.#setStatus('closed', { code: event.code, reason: event.reason });
        return;
      }
      const delay = this.#nextDelay();
      this.#setStatus('reconnecting', { code: event.code, reason: event.reason, attempt: this.attempt, delay });
      this.timer = setTimeout(() => this.#connect(), delay);
    };
  }

  #nextDelay() {
    const { minDelay, maxDelay, factor, jitter } = this.options;
    const delay = Math.min(maxDelay, minDelay * factor ** this.attempt);
    this.attempt += 1;
    return Math.round(jitter ? Math.random() * delay : delay);
  }

  #setStatus(status, detail) {
    this.status = status;
    this.#emit('status', { status, ...detail });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
