// roomcast/pubsub browser client, served by the Go handler at <mount>/client.js.
//
//   import { connect } from "/live/client.js"; // or from "@roomcast/client", this file's npm package
//   const live = connect("/live"); // or a list of instances: connect(["https://a/live", "https://b/live"])
//   const off = live.subscribe("lobby", (data, msg) => console.log(data, msg.from));
//   live.on("direct", (data) => console.log("for me:", data));
//   live.on("state", (s) => console.log(s)); // connecting | open | closed
//   await live.publish("lobby", { text: "hi" }); // if the server allows it
//
// WebSocket first, else EventSource (or { transport: "sse" }). Reconnects with
// backoff and jitter, resumes each room from its last id. See PROTOCOL.md.
// Importing it touches no browser global (safe in a server render): connect() does.

// policy (and misconfigured), disconnected by the server, session expired (once the host says so)
const NO_RETRY = { 1008: "forbidden", 4003: "disconnected", 4005: "session_expired" };
const M = "misconfigured"; // the server's middleware prevents live connections (its log says why)

export function connect(url, opts = {}) {
  const o = { transport: "auto", minDelay: 500, maxDelay: 20000, ...opts };
  // Outside a browser (a server render) there is no page to resolve a relative URL against.
  const here = globalThis.location?.href;
  const urls = [].concat(url).map((u) => {
    try { return new URL(u, here); } catch (e) { throw here ? e : new Error(`roomcast: connect(${u}) outside a browser needs an absolute URL`); }
  });
  let base = urls[0], urlIndex = 0;
  const rooms = new Map(); // room -> { handlers: Set, lastId, presence }
  const listeners = new Map(); // event -> Set
  const pending = new Map(); // ref -> { resolve, reject }
  let ws = null, es = null, timer = 0, attempt = 0, ref = 0, closed = false, lastEventId = "", wsWorked = false;
  let mode = o.transport === "sse" ? "sse" : "ws";
  let sseRebuild = 0, sseStale = false;

  const live = {
    state: "closed",
    conn: "",
    user: "",
    get transport() { return mode === "sse" ? "sse" : "websocket"; },
    get url() { return base.href; }, // the instance in use, given several

    // subscribe calls handler(data, frame) for every message in room and
    // returns a function that removes it (and unsubscribes with the last one).
    // { presence: true } adds its "presence", "join" and "leave" events.
    subscribe(room, handler, { presence = false } = {}) {
      let r = rooms.get(room);
      if (!r || (presence && !r.presence)) {
        if (!r) rooms.set(room, (r = { handlers: new Set(), lastId: "" }));
        r.presence = r.presence || presence;
        r.pending = true; // until "subscribed": a server "unsubscribed" before it is about an older subscription
        change(subscribeFrame(room, r));
      }
      r.handlers.add(handler);
      return () => {
        if (!r.handlers.delete(handler) || r.handlers.size || rooms.get(room) !== r) return;
        rooms.delete(room);
        change({ type: "unsubscribe", room });
      };
    },

    // publish resolves with the message id, or rejects with an Error with .code
    // and .key: publish again with that key and a room with history stores it once.
    publish(room, data, key = Math.random().toString(36).slice(2)) {
      return request({ type: "publish", room, data, key }, "publish").catch((e) => { throw Object.assign(e, { key }); });
    },

    // history: the room's last stored messages, oldest first.
    history(room, limit = 50) { return request({ type: "history", room, limit }, "read history"); },

    // presence: who is in room (see client.d.ts); pass .next as after for more.
    presence(room, { after = "", limit = 100 } = {}) { return request({ type: "presence", room, after, limit }, "read presence"); },

    // send delivers data to a server handler that reads Conn.Messages.
    send(data) { return request({ type: "send", data }, "send", true); },

    // call asks the server's handler of method (WithCall) and resolves with its reply,
    // or rejects with an Error with .code (the handler's, or "no_handler", "timeout"...).
    call(method, data = null, { timeout = 10000 } = {}) { return request({ type: "call", method, data, timeout }, "call", false, (timeout || 10000) + 2000); },

    // on(event, fn) -> off: "state", "open", "closed", "error", "subscribed", "unsubscribed"
    // (room, frame; frame.by === "server" when the server did it), "truncated" (refetch
    // the room), "direct", "message", "presence", "join", "leave".
    on(event, fn) {
      if (!listeners.has(event)) listeners.set(event, new Set());
      listeners.get(event).add(fn);
      return () => listeners.get(event).delete(fn);
    },

    close() {
      closed = true;
      clearTimeout(timer);
      ws?.close(1000);
      es?.close();
      ws = es = null;
      rejectPending();
      setState("closed", { code: 1000, reason: "closed by client" });
    },
  };

  function emit(event, ...args) {
    let ok = true;
    for (const fn of listeners.get(event) || []) {
      try { fn(...args); } catch (e) { console.error(e); ok = false; }
    }
    return ok;
  }

  function setState(s, detail) {
    if (live.state === s) return;
    live.state = s;
    emit("state", s, detail);
    emit(s, detail);
  }

  function fail(err) {
    const text = `roomcast: ${err.code}: ${err.message}${err.room ? ` (room ${err.room})` : ""}`;
    console.error(text);
    emit("error", Object.assign(new Error(text), err));
  }

  const error = (code, message) => Object.assign(new Error(`roomcast: ${message}`), { code });

  // request sends a frame (over SSE: POSTed, see post) and resolves with its answer.
  function request(frame, what, noAck, ms) {
    if (ws?.readyState !== 1 && !(es && live.state === "open")) return Promise.reject(error("closed", `cannot ${what}: not connected`));
    if (noAck) return Promise.resolve(sendFrame(frame));
    return new Promise((resolve, reject) => {
      const r = (frame.ref = ++ref);
      pending.set(r, { resolve, reject });
      if (ms) setTimeout(() => pending.delete(r) && reject(error("timeout", `no answer to ${what} in ${ms} ms`)), ms);
      Promise.resolve(sendFrame(frame)).catch((e) => pending.delete(r) && reject(e));
    });
  }

  // A room change: over SSE POSTed (the stream's URL, stale now, is rebuilt when it reconnects);
  // anonymous, or if the POST fails, a new stream.
  function change(f) {
    if (ws?.readyState === 1) sendFrame(f);
    else if (es) live.user && live.state === "open" ? ((sseStale = true), post(f).catch(rebuildSSE)) : rebuildSSE();
  }

  function sendFrame(frame) { return ws?.readyState === 1 ? ws.send(JSON.stringify(frame)) : post(frame); }

  // An EventSource cannot send: its frames are POSTed to the same URL, through the
  // host's middleware, for this connection, one after the other; answers come on the stream.
  let posting = Promise.resolve();
  function post(frame) {
    const body = JSON.stringify({ ...frame, conn: live.conn });
    const p = posting.then(() => postJSON(body))
      .then((r) => { if (!r.ok) throw error(r.headers.get("Roomcast-Error") || "closed", `the server refused a ${frame.type} (HTTP ${r.status})`); });
    posting = p.catch(() => {});
    return p;
  }

  const creds = () => (base.origin === globalThis.location?.origin ? "same-origin" : "include");
  const postJSON = (body) => fetch(base, { method: "POST", credentials: creds(), headers: { "Content-Type": "application/json" }, body });

  function rejectPending() {
    for (const p of pending.values()) p.reject(Object.assign(new Error("roomcast: connection closed"), { code: "closed" }));
    pending.clear();
  }

  function handle(f) {
    switch (f.type) {
      case "welcome":
        live.conn = f.conn;
        live.user = f.user || "";
        attempt = 0;
        setState("open", { conn: f.conn, user: live.user, transport: live.transport });
        break;
      case "message": {
        const r = rooms.get(f.room);
        if (r) {
          r.lastId = f.id;
          for (const h of r.handlers) {
            try { h(f.data, f); } catch (e) { console.error(e); }
          }
        }
        emit("message", f.data, f);
        break;
      }
      case "subscribed": { // by: "server" when the server subscribed us; then it is ours, resumed like any
        const r = rooms.get(f.room);
        if (r && !f.by) r.pending = false;
        if (f.by && !r) rooms.set(f.room, { handlers: new Set(), lastId: "" }), (sseStale = true);
        emit("subscribed", f.room, f);
        break;
      }
      case "unsubscribed":
        if (f.by && rooms.has(f.room) && !rooms.get(f.room).pending) rooms.delete(f.room), (sseStale = true);
        emit("unsubscribed", f.room, f);
        break;
      case "inbox": // kept for this user while away: acknowledged (read, for all tabs) once the listeners took it
        if (listeners.get("inbox")?.size && emit("inbox", f.data, f)) Promise.resolve(sendFrame({ type: "ack", id: f.id })).catch(() => {});
        break;
      case "inbox_truncated":
        emit("inbox_truncated");
        break;
      case "refresh": // the session expires at f.expires: renew it through the host's middleware
        refresh(f.expires);
        break;
      case "truncated": // the server no longer has all we missed: refetch state
        emit("truncated", f.room);
        break;
      case "direct":
        emit("direct", f.data, f);
        emit("message", f.data, f);
        break;
      case "join":
      case "leave":
        emit(f.type, f);
        break;
      case "presence":
        if (!pending.has(f.ref)) {
          emit("presence", f);
          break;
        }
      // fall through: the answer to presence()
      case "published":
      case "reply":
      case "history": {
        const p = pending.get(f.ref);
        pending.delete(f.ref);
        p?.resolve(f.type === "history" ? f.messages : f.type === "presence" ? f : f.type === "reply" ? f.data : f.id);
        break;
      }
      case "error": {
        const r = rooms.get(f.room);
        if (f.code === "invalid_id" && r?.lastId) { // a position the server cannot use: subscribe afresh
          r.lastId = "";
          emit("truncated", f.room);
          if (ws?.readyState === 1) sendFrame(subscribeFrame(f.room, r));
          break;
        }
        const p = pending.get(f.ref);
        pending.delete(f.ref);
        if (!p) fail(f); // an event, when no promise can carry it
        else {
          const err = Object.assign(new Error(`roomcast: ${f.code}: ${f.message}`), f);
          console.error(err.message);
          p.reject(err);
        }
        break;
      }
      case "close": // SSE: the server says why the stream ends
        es?.close();
        es = null;
        dropped(f.code, f.reason);
        break;
    }
  }

  function wsURL() {
    const u = target();
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    return u;
  }

  function subscribeFrame(room, r) {
    const f = { type: "subscribe", room };
    if (r.lastId) f.last_id = r.lastId;
    if (r.presence) f.presence = true;
    return f;
  }

  // Appends a query parameter and leaves the caller's query as given (searchParams would re-encode it all).
  const add = (u, k, v) => ((u.search += `${u.search ? "&" : "?"}${k}=${encodeURIComponent(v)}`), u);

  // The protocol this client speaks: a server that speaks another refuses it (400 unsupported_protocol).
  const target = () => add(new URL(base), "protocol", 1);

  function sseURL() {
    const u = target();
    for (const [room, r] of rooms) {
      add(u, "room", room);
      if (r.presence) add(u, "presence", room);
    }
    if (lastEventId) add(u, "last_event_id", lastEventId);
    return u;
  }

  function open() {
    clearTimeout(timer);
    if (closed) return;
    setState("connecting");
    if (mode === "sse") return openSSE();
    let opened = false;
    const sock = (ws = new WebSocket(wsURL()));
    sock.onopen = () => {
      opened = wsWorked = true;
      for (const [room, r] of rooms) sendFrame(subscribeFrame(room, r));
    };
    sock.onmessage = (ev) => { for (const line of ev.data.split("\n")) handle(JSON.parse(line)); };
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = null;
      rejectPending();
      if (closed) return;
      if (opened) return dropped(ev.code, ev.reason);
      probe(target()).then(({ status, error }) => {
        if (error === M || error === "unsupported_protocol") return dropped(1008, error);
        if (status === 401 || status === 403) return dropped(error === "session_expired" ? 4005 : 1008, `HTTP ${status}`, true);
        // The server answers, yet WebSocket never worked: something blocks it.
        if (o.transport === "auto" && !wsWorked && status >= 200 && status < 300) {
          mode = "sse";
          return open();
        }
        dropped(ev.code, ev.reason);
      });
    };
  }

  function openSSE() {
    sseStale = false;
    const src = (es = new EventSource(sseURL(), { withCredentials: creds() == "include" }));
    src.onmessage = (ev) => {
      if (ev.lastEventId) lastEventId = ev.lastEventId;
      handle(JSON.parse(ev.data));
    };
    src.onerror = () => {
      if (es !== src) return;
      // The browser retries by itself (unless the server changed our rooms: its URL is stale);
      // given other instances, move on instead.
      if (src.readyState === 0 && !sseStale && (urls.length < 2 || live.state === "open")) return rejectPending(), setState("connecting");
      // Closed (an HTTP error) or moving on: ask why; a refused room is named in the headers.
      src.close();
      es = null;
      probe(sseURL()).then(({ status, error, room }) => {
        if (error === M || error === "unsupported_protocol") return dropped(1008, error);
        if (error === "invalid_id") {
          lastEventId = "";
          for (const room of rooms.keys()) emit("truncated", room);
          return dropped(1006, "invalid resume position");
        }
        if (room && rooms.has(room)) {
          rooms.delete(room);
          fail({ code: error, room, message: `the server refused room ${room}` });
          return dropped(1006, `room ${room} refused`);
        }
        dropped(status === 401 || status === 403 ? (error === "session_expired" ? 4005 : 1008) : 1006, `HTTP ${status}`, true);
      });
    };
  }

  // A room change needs a new EventSource: its rooms are in the URL.
  function rebuildSSE() {
    clearTimeout(sseRebuild);
    sseRebuild = setTimeout(() => {
      if (!es || closed) return;
      es.close();
      es = null;
      open();
    }, 0);
  }

  function probe(u) {
    return fetch(u, { method: "HEAD", credentials: creds(), cache: "no-store" }).then(
      (r) => ({ status: r.status, error: r.headers.get("Roomcast-Error"), room: r.headers.get("Roomcast-Room") && decodeURIComponent(r.headers.get("Roomcast-Room").replace(/\+/g, " ")) }),
      () => ({ status: 0 }),
    );
  }

  // refresh retries what may pass later (the network, a 5xx) with backoff until the expiry.
  function refresh(expires, delay = 500) {
    const conn = live.conn;
    const again = () => conn === live.conn && Date.now() + delay < expires && setTimeout(() => refresh(expires, delay * 2), delay);
    postJSON(JSON.stringify({ type: "refresh", conn })).then(
      (r) => r.ok || (r.status >= 500 ? again() : r.status !== 404 && fail({ code: "refresh_refused", message: `the server refused to refresh the session (HTTP ${r.status}); it ends at ${new Date(expires).toISOString()}` })),
      again,
    );
  }

  function dropped(code, reason, probed) {
    rejectPending();
    setState("closed", { code, reason });
    if (o.transport === "auto") mode = "ws";
    if (code === 1009) fail({ code: "too_large", message: "a message exceeded the server's size limit; the server closed the connection" });
    if (closed) return;
    // An expired session is over only if the host says so: another tab may have renewed it.
    if (code === 4005 && !probed) return probe(base).then(({ status }) => dropped(status === 401 || status === 403 ? 4005 : 1006, reason, true));
    if (NO_RETRY[code]) {
      closed = true;
      fail({ code: reason === M || reason === "unsupported_protocol" ? reason : NO_RETRY[code], message: `connection ended (${code} ${reason || ""}), not retrying` });
      return;
    }
    // another instance, at random: a dead one's clients spread out
    base = urls[(urlIndex = (urlIndex + 1 + ((Math.random() * (urls.length - 1)) | 0)) % urls.length)];
    const cap = Math.min(o.maxDelay, o.minDelay * 2 ** attempt++);
    const delay = code === 4004 ? o.maxDelay * (1 + Math.random()) / 2 : Math.random() * (code === 1012 ? Math.min(cap, 1000) : cap); // full jitter; 4004: later
    timer = setTimeout(open, delay);
  }

  // After the caller's first subscribe calls: they ride on the first connection.
  Promise.resolve().then(open);
  return live;
}
