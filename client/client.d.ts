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

/** An error reported by the server or the client. */
export interface ClientError extends Error {
  /** "bad_request", "invalid_room", "forbidden", "too_many_rooms", "unsupported", "internal", "closed", "too_large". */
  code: string;
  room?: string;
}

export interface StateDetail {
  code?: number;
  reason?: string;
  conn?: string;
  user?: string;
  transport?: "websocket" | "sse";
}

export interface Options {
  /** "auto" (WebSocket, falling back to SSE), "websocket", or "sse" (receive-only). Default "auto". */
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
  /** Calls handler for every message in room; returns the unsubscribe function. */
  subscribe<T = unknown>(room: string, handler: (data: T, frame: Frame<T>) => void): () => void;
  /** Publishes to a room (WebSocket only, if the server allows it); resolves with the message id. */
  publish(room: string, data: unknown): Promise<string>;
  /** The room's last stored messages, oldest first (WebSocket only; rooms with history). */
  history<T = unknown>(room: string, limit?: number): Promise<Array<{ id: string; from?: string; time: string; data: T }>>;
  /** Sends data to a server handler reading Conn.Messages (WebSocket only). */
  send(data: unknown): Promise<void>;
  on(event: "state", fn: (state: State, detail?: StateDetail) => void): () => void;
  on(event: "open" | "connecting" | "closed", fn: (detail?: StateDetail) => void): () => void;
  on(event: "error", fn: (err: ClientError) => void): () => void;
  /** A subscription took effect: messages published from now on arrive. */
  on(event: "subscribed", fn: (room: string) => void): () => void;
  /** After a reconnect, the server could not replay everything missed in room: refetch its state. */
  on(event: "truncated", fn: (room: string) => void): () => void;
  on<T = unknown>(event: "direct" | "message", fn: (data: T, frame: Frame<T>) => void): () => void;
  /** Closes for good: no reconnect. */
  close(): void;
}

/** Connects to the pubsub handler mounted at url (e.g. "/live"). */
export function connect(url: string | URL, options?: Options): Live;
