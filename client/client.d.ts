// Type declarations for the roomcast/pubsub browser client (client.js).

export type State = "connecting" | "open" | "closed";

/** A frame as the server sent it; see PROTOCOL.md. */
export interface Frame<T = unknown> {
  type: "message" | "direct";
  id: string;
  /** The room, for "message" frames. */
  room?: string;
  /** "user" or "conn", for "direct" frames. */
  to?: "user" | "conn";
  /** User id of the publishing client, set by the server. */
  from?: string;
  data: T;
}

/** The error codes of the server (PROTOCOL.md) and of this client. A call's handler may use codes of its own. */
export type ErrorCode =
  | "bad_request" | "invalid_room" | "forbidden" | "too_many_rooms" | "unsupported" | "no_history" | "invalid_id"
  | "internal" | "outcome_unknown" | "store_failed" | "no_handler" | "too_many_calls" | "timeout" | "no_such_conn"
  | "invalid_conn" | "unavailable" | "busy" | "unsupported_protocol" | "no_inbox" | "closed" | "too_large"
  | "misconfigured" | "disconnected" | "session_expired" | "refresh_refused";

/** An error reported by the server or the client. */
export interface ClientError extends Error {
  /**
   * "bad_request", "invalid_room", "forbidden", "too_many_rooms", "unsupported", "no_history", "invalid_id", "internal",
   * "outcome_unknown", "store_failed" (publish), "no_handler", "too_many_calls", "timeout" or the handler's own code (call),
   * "no_such_conn" (over SSE: the connection ended while a frame was POSTed), "invalid_conn", "unavailable" (a POSTed
   * frame's instance did not answer), "busy" (frames POSTed faster than handled), "unsupported_protocol" (the server speaks another protocol version), "no_inbox",
   * "closed", "too_large", "misconfigured" (the server's middleware prevents live connections: see its log; the client
   * does not retry), "disconnected" (the server ended the connection, close 4003; the client does not reconnect),
   * "session_expired" (close 4005: the session was not refreshed in time and the host refuses the client now),
   * "refresh_refused" (the host's middleware refused a session refresh; the connection ends at the expiry).
   * A call's handler may use a code of its own (its CallError).
   */
  code: ErrorCode | (string & {});
  room?: string;
  /** publish: the idempotency key it used; publish again with it and a room with history stores the message once. */
  key?: string;
}

export interface StateDetail {
  /**
   * Close code: 4003 the server disconnected the client (not retried), 4004 it may come back later (a long
   * backoff), 4005 the session expired (retried only if a HEAD probe passes), 1008 refused by the host
   * (401/403) or misconfigured, 1012 reconnect soon;
   * see PROTOCOL.md for all.
   */
  code?: number;
  reason?: string;
  conn?: string;
  user?: string;
  transport?: "websocket" | "sse";
}

/** Who is in a room: counts of the whole room and one page of members, ordered by user id. */
export interface Presence {
  room: string;
  /** Distinct users; a user with two tabs is one. */
  count: number;
  /** Connections, anonymous ones included. */
  conns: number;
  members: Array<{ user: string; conns: number }>;
  /** The cursor of the next page (pass it as after), absent on the last page. */
  next?: string;
}

export interface PresenceEvent {
  room: string;
  user: string;
  /** The room's number of users after the event. */
  count: number;
}

export interface Options {
  /** "auto" (WebSocket, falling back to SSE), "websocket", or "sse" (its frames are POSTed to the same URL). Default "auto". */
  transport?: "auto" | "websocket" | "sse";
  /** Backoff bounds in milliseconds, with full jitter. Default 500 and 20000. */
  minDelay?: number;
  maxDelay?: number;
}

export interface Live {
  readonly state: State;
  /** This connection's id (for server-side SendToConn), once open. */
  readonly conn: string;
  /** The user the server identified, "" if anonymous. */
  readonly user: string;
  readonly transport: "websocket" | "sse";
  /** The URL in use (of the list given to connect). */
  readonly url: string;
  /**
   * Calls handler for every message in room; returns the unsubscribe function.
   * With { presence: true }, the room's "presence" snapshot and its "join" and "leave" events come too.
   */
  subscribe<T = unknown>(room: string, handler: (data: T, frame: Frame<T>) => void, options?: { presence?: boolean }): () => void;
  /**
   * Publishes to a room (if the server allows it); resolves with the message id.
   * key (default: a random one) is the idempotency key: in a room with history, publishing again
   * with the same key stores the message once. A rejection's error carries .key for that retry.
   */
  publish(room: string, data: unknown, key?: string): Promise<string>;
  /** The room's last stored messages, oldest first (rooms with history). */
  history<T = unknown>(room: string, limit?: number): Promise<Array<{ id: string; from?: string; time: string; data: T }>>;
  /** Who is in room on every instance, one page of members at a time. */
  presence(room: string, page?: { after?: string; limit?: number }): Promise<Presence>;
  /** Sends data to a server handler reading Conn.Messages (WebSocket only: over SSE it is refused with "unsupported"). */
  send(data: unknown): Promise<void>;
  /**
   * Asks the server's handler of method (Go: pubsub.WithCall) and resolves with its reply. Rejects with an error whose
   * code is the handler's own (its CallError), "no_handler", "too_many_calls", "timeout" (after timeout ms, default
   * 10000, or the server's limit) or "internal" (the handler failed; its text stays on the server).
   */
  call<T = unknown>(method: string, data?: unknown, options?: { timeout?: number }): Promise<T>;
  on(event: "state", fn: (state: State, detail?: StateDetail) => void): () => void;
  on(event: "open" | "connecting" | "closed", fn: (detail?: StateDetail) => void): () => void;
  on(event: "error", fn: (err: ClientError) => void): () => void;
  /**
   * A subscription took effect: messages published from now on arrive. frame.by is "server" when the server
   * subscribed this connection (Broker.SubscribeConn/SubscribeUser): the room is then the client's like its
   * own (resumed after a reconnect); attach handlers with subscribe(room, handler), which sends nothing more.
   */
  on(event: "subscribed", fn: (room: string, frame: { room: string; by?: "server" }) => void): () => void;
  /** The connection left room; frame.by is "server" when the server took it out (it is not resubscribed). */
  on(event: "unsubscribed", fn: (room: string, frame: { room: string; by?: "server" }) => void): () => void;
  /** After a reconnect, the server could not replay everything missed in room: refetch its state. */
  on(event: "truncated", fn: (room: string) => void): () => void;
  on<T = unknown>(event: "direct" | "message", fn: (data: T, frame: Frame<T>) => void): () => void;
  /** A room subscribed with { presence: true }: its members when the subscription took effect, and again after a burst of changes (replace, do not merge). */
  on(event: "presence", fn: (presence: Presence) => void): () => void;
  /** A user's first connection joined, or their last one left, a room subscribed with { presence: true }. */
  on(event: "join" | "leave", fn: (event: PresenceEvent) => void): () => void;
  /**
   * A message kept in this user's inbox (sent while away, or now). Once every listener returned without throwing,
   * the client acknowledges it: read, for all of the user's tabs.
   */
  on<T = unknown>(event: "inbox", fn: (data: T, frame: { id: string; time: string; data: T }) => void): () => void;
  /** The inbox was full: older messages may have been dropped. */
  on(event: "inbox_truncated", fn: () => void): () => void;
  /** Closes for good: no reconnect. */
  close(): void;
}

/**
 * Connects to the pubsub handler mounted at url (e.g. "/live"), relative to the page. Importing the module touches no
 * browser global; connect() does: outside a browser (a server render), a relative url throws an Error. When the server asks (a session expiry set
 * by the host's middleware), it refreshes the session by itself: a POST to url with the page's cookies,
 * which passes the host's middleware again. Given a list of URLs (the
 * instances of one app), it reconnects to the next one whenever a connection fails.
 */
export function connect(url: string | URL | Array<string | URL>, options?: Options): Live;
