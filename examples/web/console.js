// The console page shared by the echo and commands demos: a log pane, an
// input, Send and Quit, the app's known commands, and the connection status.
import { $, connect, log } from '/page.js';

/** Builds the console into <main> and connects it to `path`. */
export function startConsole({ path, title, lead, commands = [] }) {
  document.querySelector('main').innerHTML = `
    <p><a href="/">← all demos</a></p>
    <h1></h1>
    <p class="lead"></p>
    <div class="card">
      <span id="status" class="status"></span>
      <div id="log" class="log" aria-live="polite"></div>
      <form id="form" class="send">
        <input id="input" type="text" placeholder="Type a message" autocomplete="off" autofocus>
        <button id="send" type="submit">Send</button>
        <button id="quit" type="button" class="danger">Quit</button>
      </form>
    </div>
    <div class="card" id="known">
      <h2>Known commands</h2>
      <div id="commands" class="chips"></div>
    </div>`;
  document.querySelector('h1').textContent = title;
  document.querySelector('p.lead').textContent = lead;

  const sb = connect(path);
  const send = (text) => {
    log('log', text, 'out');
    sb.send(text);
  };
  $('known').hidden = commands.length === 0;
  for (const command of commands) {
    const chip = document.createElement('span');
    chip.className = 'chip';
    chip.textContent = command;
    chip.onclick = () => send(command);
    $('commands').append(chip);
  }
  sb.addEventListener('message', (e) => log('log', typeof e.detail.data === 'string' ? e.detail.data : '[binary]', 'in'));
  sb.addEventListener('close', (e) => log('log', `connection closed (${e.detail.code}${e.detail.reason ? ': ' + e.detail.reason : ''})`, 'sys'));
  $('form').onsubmit = (e) => {
    e.preventDefault();
    const text = $('input').value;
    if (text) send(text);
    $('input').value = '';
  };
  $('quit').onclick = () => {
    sb.close(1000, 'quit');
    log('log', 'quit', 'sys');
  };
}
