// One websocket per run page. After a drop it reconnects with exponential backoff and jitter,
// capped, so that the pages of a restarted server do not all come back in the same instant;
// the backoff resets once the server says hello (4013 "try again later", sent while the
// database or Redis is away, is retried like a drop). A 44xx close code means "not allowed" and
// stops reconnecting. `opens` and `reconnects` count connections (read by the browser tests:
// an idle page must keep its one socket).

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;

// Delay before reconnect attempt `attempt` (0 for the first): the ceiling doubles per failed
// attempt up to MAX_DELAY_MS, and the delay is drawn from its upper half ("equal jitter"), so
// it spreads clients out without ever retrying at once.
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** attempt);
  return ceiling / 2 + random() * (ceiling / 2);
}

export function connectRun(runId, { onOpen, onMessage, onStatus }) {
  let ws = null;
  let attempt = 0;
  let timer = null;
  let stopped = false;
  let opens = 0;
  const proto = window.location.protocol === "https:" ? "wss" : "ws";
  const url = `${proto}://${window.location.host}/ws/runs/${runId}/`;

  const open = () => {
    timer = null;
    opens += 1;
    onStatus && onStatus("connecting");
    ws = new WebSocket(url);
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg.type === "hello") {
        attempt = 0;
        onStatus && onStatus("live");
        onOpen && onOpen();
      } else {
        onMessage(msg);
      }
    };
    ws.onclose = (ev) => {
      if (ev.code === 4403 || ev.code === 4401) {
        stopped = true;
        onStatus && onStatus(ev.code === 4403 ? "forbidden" : "logged out");
        return;
      }
      if (stopped || timer !== null) return;
      onStatus && onStatus("reconnecting");
      timer = setTimeout(open, backoffDelay(attempt));
      attempt += 1;
    };
  };
  open();
  return {
    close() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      if (ws) ws.close();
    },
    // for tests: drop the connection as a network failure would
    drop() { if (ws) ws.close(); },
    get opens() { return opens; },
    get reconnects() { return Math.max(0, opens - 1); },
  };
}
