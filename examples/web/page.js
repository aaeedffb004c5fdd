// Small helpers shared by the demo pages.
import { Switchboard } from '/switchboard.js';

export const $ = (id) => document.getElementById(id);

/** Shows a Switchboard's status in the element with id `statusId`. */
export function showStatus(sb, statusId = 'status') {
  const element = $(statusId);
  element.innerHTML = '<span class="dot"></span><span class="text"></span>';
  sb.addEventListener('status', (event) => {
    const { status, code, reason, delay } = event.detail;
    element.className = `status ${status}`;
    let text = status;
    if (status === 'reconnecting' && delay !== undefined) text = `reconnecting in ${(delay / 1000).toFixed(1)} s`;
    if (status === 'closed' && code) text = `closed (${code}${reason ? ': ' + reason : ''})`;
    element.querySelector('.text').textContent = text;
  });
}

/** Appends a line to a log pane; kind is 'in', 'out' or 'sys'. */
export function log(paneId, text, kind) {
  const pane = $(paneId);
  const line = document.createElement('div');
  line.className = kind;
  line.textContent = text;
  pane.append(line);
  while (pane.childElementCount > 500) pane.firstElementChild.remove();
  pane.scrollTop = pane.scrollHeight;
}

/** A Switchboard connection to `path` with its status shown. */
export function connect(path, options) {
  const sb = new Switchboard(path, options);
  showStatus(sb);
  window.sb = sb; // for the console and the browser tests
  return sb;
}
