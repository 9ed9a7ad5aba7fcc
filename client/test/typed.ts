// Type-checked with tsc --strict against the installed package (client/test.sh):
// every part of client.d.ts a user touches, and @ts-expect-error lines that
// fail the check if the declarations ever degrade to any.
import {
  connect,
  type ClientError,
  type ErrorCode,
  type Frame,
  type Live,
  type Options,
  type Presence,
  type PresenceEvent,
  type State,
  type StateDetail,
} from "@roomcast/client";

interface Chat {
  text: string;
}

export async function usage(): Promise<void> {
  // connect: a URL, a URL object, or several instances; options.
  const options: Options = { transport: "sse", minDelay: 250, maxDelay: 10_000 };
  // @ts-expect-error: not a transport
  const badOptions: Options = { transport: "long-polling" };
  const live: Live = connect(["https://a.example/live", new URL("https://b.example/live")], options);
  connect("/live");
  // @ts-expect-error: a URL, not a number
  connect(8080);
  const transport: "websocket" | "sse" = live.transport;
  const ids: string[] = [live.conn, live.user, live.url];
  // @ts-expect-error: read-only
  live.state = "open";

  // subscribe: typed data and frame; the unsubscribe function.
  const off: () => void = live.subscribe<Chat>(
    "lobby",
    (data, frame: Frame<Chat>) => {
      const text: string = data.text;
      const id: string = frame.id;
      const from: string | undefined = frame.from;
      // @ts-expect-error: data is a Chat, not any
      data.nope;
      // @ts-expect-error: frame.data is a Chat too
      const n: number = frame.data.text;
    },
    { presence: true },
  );
  off();
  live.subscribe("news", (data) => {
    // @ts-expect-error: data is unknown unless the caller says what it is
    data.headline;
  });
  // @ts-expect-error: the handler takes (data, frame)
  live.subscribe("news", (a: unknown, b: unknown, c: string) => {});

  // publish resolves with the message id; its error names the idempotency key.
  const id: string = await live.publish("lobby", { text: "hi" }, "key-1");
  live.publish("lobby", { text: "hi" }).catch((e: ClientError) => {
    const key: string | undefined = e.key;
  });

  // call<T>: the reply's type, unknown by default.
  const sum: number = await live.call<number>("add", { a: 1, b: 2 }, { timeout: 500 });
  // @ts-expect-error: call<number> resolves to a number
  const wrong: string = await live.call<number>("add");
  const reply = await live.call("anything");
  // @ts-expect-error: unknown, not any
  reply.field;
  // @ts-expect-error: options are { timeout }
  live.call("add", null, { retries: 3 });

  // error codes: a union (with room for a call handler's own codes), not any.
  live.on("error", (err: ClientError) => {
    const code: ErrorCode | (string & {}) = err.code;
    if (err.code === "misconfigured" || err.code === "session_expired" || err.code === "my_handler_code") return;
    const room: string | undefined = err.room;
    // @ts-expect-error: the code is a string
    const n: number = err.code;
  });
  const known: ErrorCode = "unsupported_protocol";
  // @ts-expect-error: not an error code
  const unknownCode: ErrorCode = "not_a_code";

  // history, presence.
  const messages = await live.history<Chat>("chat:general", 20);
  const first: { id: string; from?: string; time: string; data: Chat } | undefined = messages[0];
  // @ts-expect-error: history<Chat> is typed
  messages[0]?.data.nope;
  const who: Presence = await live.presence("lobby", { after: "alice", limit: 50 });
  const count: number = who.count + who.conns + who.members.length;
  const next: string | undefined = who.next;
  live.on("presence", (p: Presence) => p.members.map((m) => m.user + m.conns));
  live.on("join", (e: PresenceEvent) => e.user + e.count);
  live.on("leave", (e) => {
    const room: string = e.room;
  });

  // inbox, direct messages, state, server-made subscriptions.
  live.on<{ unread: number }>("inbox", (data, frame) => {
    const unread: number = data.unread;
    const at: string = frame.time;
    // @ts-expect-error: typed
    const s: string = data.unread;
  });
  live.on("inbox_truncated", () => {});
  live.on<Chat>("direct", (data, frame) => data.text + frame.to);
  live.on("state", (state: State, detail?: StateDetail) => {
    if (state === "closed" && detail?.code === 4003) return;
    // @ts-expect-error: not a state
    if (state === "reconnecting") return;
  });
  live.on("open", (detail) => detail?.transport);
  live.on("subscribed", (room, frame) => frame.by === "server" && room);
  live.on("truncated", (room: string) => room);
  // @ts-expect-error: no such event
  live.on("nope", () => {});
  await live.send({ hello: 1 });
  live.close();
}
