"""The run page's websocket client (frontend/static/frontend/js/run_socket.js) under node, with a
fake WebSocket and timers: reconnect delays grow exponentially with jitter up to a cap, reset
once the server says hello, and stop for good on a 44xx close."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from django.conf import settings

NODE = shutil.which("node")
MODULE = settings.BASE_DIR / "frontend" / "static" / "frontend" / "js" / "run_socket.js"

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

SCRIPT = """
const { backoffDelay, connectRun } = await import(process.argv[1]);
const sockets = [], timers = [], statuses = [];
globalThis.window = { location: { protocol: "http:", host: "example.test" } };
globalThis.WebSocket = class {
  constructor(url) { this.url = url; sockets.push(this); }
  close(code = 1006) { this.onclose({ code }); }
  hello() { this.onmessage({ data: JSON.stringify({ type: "hello" }) }); }
};
globalThis.setTimeout = (fn, ms) => { timers.push({ fn, ms }); return timers.length; };
globalThis.clearTimeout = () => {};
const fire = () => timers.at(-1).fn();

const bounds = [];
for (let a = 0; a < 10; a++) bounds.push([backoffDelay(a, () => 0), backoffDelay(a, () => 1)]);

const socket = connectRun(7, { onMessage() {}, onStatus: (s) => statuses.push(s) });
sockets.at(-1).hello();
for (let i = 0; i < 4; i++) { sockets.at(-1).close(); fire(); }  // four failed attempts
sockets.at(-1).hello();                                         // back: backoff resets
sockets.at(-1).close(); fire();
const counts = { opens: socket.opens, reconnects: socket.reconnects };
sockets.at(-1).close(4403);                                     // forbidden: no retry
console.log(JSON.stringify({
  bounds, delays: timers.map((t) => t.ms), counts, url: sockets[0].url,
  timersAfterForbidden: timers.length, last: statuses.at(-1),
}));
"""


def test_reconnect_backoff_grows_with_jitter_caps_resets_and_stops_on_forbidden():
    out = subprocess.run(
        [NODE, "--input-type=module", "-e", SCRIPT, MODULE.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    # attempt n waits between half and all of min(15 s, 0.5 s * 2**n)
    ceilings = [min(15000, 500 * 2**n) for n in range(10)]
    assert got["bounds"] == [[c / 2, c] for c in ceilings]
    delays = got["delays"]
    assert len(delays) == 5
    for n, ms in enumerate(delays[:4]):
        assert ceilings[n] / 2 <= ms <= ceilings[n], (n, ms)
    assert 250 <= delays[4] <= 500, "a hello resets the backoff"
    assert got["counts"] == {"opens": 6, "reconnects": 5}
    assert got["url"] == "ws://example.test/ws/runs/7/"
    assert got["timersAfterForbidden"] == 5 and got["last"] == "forbidden"
