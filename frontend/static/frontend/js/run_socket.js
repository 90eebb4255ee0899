// One websocket per run page with reconnects (backoff up to 10 s). A 44xx close code means
// "not allowed" and stops reconnecting.

export function connectRun(runId, { onOpen, onMessage, onStatus }) {
  let ws = null;
  let delay = 500;
  let stopped = false;
  const proto = window.location.protocol === "https:" ? "wss" : "ws";
  const url = `${proto}://${window.location.host}/ws/runs/${runId}/`;

  const open = () => {
    onStatus && onStatus("connecting");
    ws = new WebSocket(url);
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg.type === "hello") {
        delay = 500;
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
      if (stopped) return;
      onStatus && onStatus("reconnecting");
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 10000);
    };
  };
  open();
  return {
    close() { stopped = true; if (ws) ws.close(); },
    // for tests: drop the connection as a network failure would
    drop() { if (ws) ws.close(); },
  };
}
