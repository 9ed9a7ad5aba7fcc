// Unit tests of the client's own logic (node --test), through its public API,
// against the installed package. The browser's WebSocket and EventSource are
// stood in for by the minimal classes below, fetch by one that records the
// request and answers 2xx, and setTimeout and Math.random are swapped only
// around the synchronous step whose timers a test reads. The tests in e2e/
// run the same file in Chromium against a real server.
import { test, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { connect } from "@roomcast/client";

class FakeWebSocket {
  static all = [];
  readyState = 0;
  sent = [];
  constructor(url) {
    this.url = String(url);
    FakeWebSocket.all.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
  }
  // What a server and the network do to it:
  open() {
    this.readyState = 1;
    this.onopen({});
  }
  receive(...frames) {
    this.onmessage({ data: frames.map((f) => JSON.stringify(f)).join("\n") });
  }
  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose({ code, reason });
  }
}

class FakeEventSource {
  static all = [];
  readyState = 0;
  constructor(url, init) {
    this.url = String(url);
    this.init = init;
    FakeEventSource.all.push(this);
  }
  close() {
    this.readyState = 2;
  }
  receive(frame, lastEventId = "") {
    this.readyState = 1;
    this.onmessage({ data: JSON.stringify(frame), lastEventId });
  }
}

const lastWS = () => FakeWebSocket.all.at(-1);
const lastES = () => FakeEventSource.all.at(-1);
const tick = () => new Promise((resolve) => setImmediate(resolve));

// timers runs fn with setTimeout recording instead of scheduling (and
// Math.random returning random, when given), and returns what it scheduled.
function timers(fn, random) {
  const scheduled = [];
  const { setTimeout: real } = globalThis;
  const realRandom = Math.random;
  globalThis.setTimeout = (run, ms) => scheduled.push({ run, ms });
  if (random !== undefined) Math.random = () => random;
  try {
    fn();
  } finally {
    globalThis.setTimeout = real;
    Math.random = realRandom;
  }
  return scheduled;
}

// reconnect drops the socket with code and runs the reconnect it scheduled.
function reconnect(ws, code = 1006) {
  const [t] = timers(() => ws.drop(code));
  t.run();
}

let errors, requests, clients;
beforeEach(() => {
  globalThis.WebSocket = FakeWebSocket;
  globalThis.EventSource = FakeEventSource;
  FakeWebSocket.all = [];
  FakeEventSource.all = [];
  errors = [];
  requests = [];
  clients = [];
  console.error = (...args) => errors.push(args.join(" ")); // the client logs what it reports
  globalThis.fetch = async (url, init) => {
    requests.push({ url: String(url), method: init.method, body: init.body && JSON.parse(init.body) });
    return { ok: true, status: init.method === "HEAD" ? 204 : 202, headers: new Headers() };
  };
});
afterEach(() => clients.forEach((live) => live.close()));

function open(url, options) {
  const live = connect(url, options);
  clients.push(live);
  return live;
}

test("frames: a WebSocket message carrying several frames split on \\n, handled in order", async () => {
  const live = open("http://example.test/live");
  const got = [];
  live.subscribe("lobby", (data, frame) => got.push([data, frame.id, frame.from]));
  const states = [];
  live.on("state", (s) => states.push(s));
  const subscribed = [];
  live.on("subscribed", (room) => subscribed.push(room));
  await tick();
  const ws = lastWS();
  ws.open();
  assert.deepEqual(ws.sent, [{ type: "subscribe", room: "lobby" }]);
  ws.receive(
    { type: "welcome", protocol: 1, conn: "c1", user: "alice" },
    { type: "subscribed", room: "lobby" },
    { type: "message", id: "1", room: "lobby", from: "bob", data: { text: "a\nb" } },
    { type: "message", id: "2", room: "lobby", data: 2 },
    { type: "message", id: "3", room: "other", data: 3 },
  );
  assert.deepEqual(got, [[{ text: "a\nb" }, "1", "bob"], [2, "2", undefined]]);
  assert.deepEqual(subscribed, ["lobby"]);
  assert.deepEqual(states, ["connecting", "open"]);
  assert.equal(live.conn, "c1");
  assert.equal(live.user, "alice");
});

test("frames: a reply, an error and a presence answer settle their requests by ref", async () => {
  const live = open("http://example.test/live");
  await tick();
  const ws = lastWS();
  ws.open();
  ws.receive({ type: "welcome", conn: "c1" });
  let sum, who, refused;
  const timeouts = timers(() => {
    sum = live.call("add", [1, 2]);
    who = live.presence("lobby");
    refused = live.publish("lobby", 1, "k1");
  });
  assert.deepEqual(timeouts.map((t) => t.ms), [12000]); // the call's: its timeout, and 2 s for the answer to come
  const [call, presence, publish] = ws.sent;
  assert.deepEqual([call.type, call.method, call.timeout, presence.type, publish.key], ["call", "add", 10000, "presence", "k1"]);
  ws.receive(
    { type: "reply", ref: call.ref, data: 3 },
    { type: "presence", ref: presence.ref, room: "lobby", count: 1, conns: 2, members: [{ user: "bob", conns: 2 }] },
    { type: "error", ref: publish.ref, code: "forbidden", message: "no" },
  );
  assert.equal(await sum, 3);
  assert.equal((await who).count, 1);
  await assert.rejects(refused, { code: "forbidden", key: "k1" });
});

test("backoff: full jitter under min(maxDelay, minDelay·2^attempt), reset by a welcome", async () => {
  open("http://example.test/live", { minDelay: 100, maxDelay: 1000 });
  await tick();
  const caps = [100, 200, 400, 800, 1000, 1000];
  for (const [i, cap] of caps.entries()) {
    const ws = lastWS();
    ws.open(); // no welcome: the attempts add up
    const random = i % 2 ? 0 : 0.999999;
    const [t, ...more] = timers(() => ws.drop(1006), random);
    assert.equal(more.length, 0);
    assert.ok(t.ms >= 0 && t.ms < cap, `attempt ${i}: ${t.ms} ms, cap ${cap}`);
    if (random) assert.ok(t.ms > cap * 0.99, `attempt ${i}: ${t.ms} ms is the top of [0, ${cap})`);
    else assert.equal(t.ms, 0);
    t.run();
  }
  assert.equal(FakeWebSocket.all.length, caps.length + 1);
  const ws = lastWS();
  ws.open();
  ws.receive({ type: "welcome", conn: "c2" });
  const [t] = timers(() => ws.drop(1006), 0.999999);
  assert.ok(t.ms < 100 && t.ms > 99, `after a welcome: ${t.ms} ms, cap 100`);
});

test("backoff: 1012 within a second, 4004 between half and all of maxDelay, 4003 and 1008 never", async () => {
  const live = open("http://example.test/live", { minDelay: 4000, maxDelay: 20000 });
  const reported = [];
  live.on("error", (e) => reported.push(e.code));
  await tick();
  let ws = lastWS();
  ws.open();
  let [t] = timers(() => ws.drop(1012, "service restart"), 0.999999);
  assert.ok(t.ms < 1000 && t.ms > 990, `1012: ${t.ms} ms`);
  t.run();
  ws = lastWS();
  ws.open();
  for (const random of [0, 0.999999]) {
    const live2 = open("http://example.test/live", { maxDelay: 20000 });
    await tick();
    const ws2 = lastWS();
    ws2.open();
    [t] = timers(() => ws2.drop(4004, "come back later"), random);
    assert.ok(t.ms >= 10000 && t.ms < 20000, `4004: ${t.ms} ms`);
    live2.close();
  }
  assert.deepEqual(timers(() => ws.drop(4003, "banned")), []);
  assert.equal(live.state, "closed");
  assert.deepEqual(reported, ["disconnected"]);

  const live3 = open("http://example.test/live");
  live3.on("error", (e) => reported.push(e.code));
  await tick();
  lastWS().open();
  assert.deepEqual(timers(() => lastWS().drop(1008)), []);
  assert.deepEqual(reported, ["disconnected", "forbidden"]);
});

test("resume: on a reconnect each room is resubscribed with its last message id", async () => {
  const live = open("http://example.test/live");
  const noop = () => {};
  live.subscribe("a", noop);
  live.subscribe("b", noop, { presence: true });
  live.subscribe("c", noop);
  await tick();
  let ws = lastWS();
  ws.open();
  ws.receive(
    { type: "welcome", conn: "c1" },
    { type: "message", id: "10", room: "a", data: 1 },
    { type: "message", id: "57", room: "b", data: 2 },
    { type: "message", id: "11", room: "a", data: 3 },
    { type: "direct", id: "99", to: "user", data: 4 },
  );
  reconnect(ws);
  ws = lastWS();
  ws.open();
  assert.deepEqual(ws.sent, [
    { type: "subscribe", room: "a", last_id: "11" },
    { type: "subscribe", room: "b", last_id: "57", presence: true },
    { type: "subscribe", room: "c" },
  ]);
  // A position the server cannot use: the room starts afresh (and the app is told to refetch).
  const truncated = [];
  live.on("truncated", (room) => truncated.push(room));
  ws.receive({ type: "welcome", conn: "c2" }, { type: "error", code: "invalid_id", room: "a", message: "bad id" });
  assert.deepEqual(ws.sent.at(-1), { type: "subscribe", room: "a" });
  assert.deepEqual(truncated, ["a"]);
  // A room left is not resubscribed.
  live.subscribe("gone", noop)();
  reconnect(ws);
  lastWS().open();
  assert.deepEqual(lastWS().sent.map((f) => f.room), ["a", "b", "c"]);
});

test("resume over SSE: rooms and the last event id in the new stream's URL; the caller's query kept as given", async () => {
  const live = open("http://example.test/live?token=a%20b&x=1,2", { transport: "sse" });
  live.subscribe("chat:é&x", () => {}, { presence: true });
  live.subscribe("news", () => {});
  await tick();
  let es = lastES();
  assert.equal(es.url, "http://example.test/live?token=a%20b&x=1,2&protocol=1&room=chat%3A%C3%A9%26x&presence=chat%3A%C3%A9%26x&room=news");
  assert.equal(es.init.withCredentials, true); // no page here: every origin is another
  es.receive({ type: "welcome", conn: "c1", user: "alice" });
  es.receive({ type: "message", id: "42", room: "chat:é&x", data: 1 }, "42");
  es.receive({ type: "message", id: "k-7", room: "news", data: 2 }); // a room without history: no SSE id
  const [t] = timers(() => es.receive({ type: "close", code: 1012, reason: "max age" }), 0.5);
  assert.equal(es.readyState, 2);
  t.run();
  es = lastES();
  assert.equal(es.url, "http://example.test/live?token=a%20b&x=1,2&protocol=1&room=chat%3A%C3%A9%26x&presence=chat%3A%C3%A9%26x&room=news&last_event_id=42");
  // Over SSE a frame is POSTed to the URL the caller gave, unchanged.
  es.receive({ type: "welcome", conn: "c2", user: "alice" });
  let sent;
  timers(() => (sent = live.call("ping", null, { timeout: 500 })));
  await tick();
  assert.deepEqual(requests.map((r) => [r.method, r.url, r.body.type, r.body.conn]), [["POST", "http://example.test/live?token=a%20b&x=1,2", "call", "c2"]]);
  es.receive({ type: "reply", ref: requests[0].body.ref, data: "pong" });
  assert.equal(await sent, "pong");
});

test("URLs: the WebSocket and its HEAD probe append to the caller's query; blocked WebSocket falls back to SSE", async () => {
  open("https://example.test/live?sig=a+b%2Fc&flag");
  await tick();
  const ws = lastWS();
  assert.equal(ws.url, "wss://example.test/live?sig=a+b%2Fc&flag&protocol=1");
  ws.drop(1006); // never opened: ask the server why with a HEAD
  await tick();
  assert.deepEqual(requests.map((r) => [r.method, r.url]), [["HEAD", "https://example.test/live?sig=a+b%2Fc&flag&protocol=1"]]);
  assert.equal(lastES().url, "https://example.test/live?sig=a+b%2Fc&flag&protocol=1"); // it answered 204: WebSocket is blocked
});

test("connect outside a browser: a relative URL is a clear Error, not a ReferenceError", () => {
  assert.equal(typeof location, "undefined");
  assert.throws(() => connect("/live"), (e) => !(e instanceof ReferenceError) && /roomcast: connect\(\/live\) outside a browser needs an absolute URL/.test(e.message));
});
