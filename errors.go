package pubsub

import "errors"

// Errors returned by the broker and its connections. Wrapped errors carry
// detail; test for these with errors.Is. Those a client can meet carry the
// code its error frame says (PROTOCOL.md §6), shown in their declaration.
var (
	// ErrClosed: the broker or the connection is closed.
	ErrClosed = errors.New("pubsub: closed")
	// ErrInvalidRoom: a room name breaks the rules in PROTOCOL.md
	// (1–128 bytes of printable UTF-8, no whitespace, ".", "*", ">" or leading "$").
	ErrInvalidRoom error = &codedError{"pubsub: invalid room name", "invalid_room"}
	// ErrInvalidUser: a user id is empty, longer than 256 bytes or not printable UTF-8.
	ErrInvalidUser = errors.New("pubsub: invalid user id")
	// ErrInvalidConnID: a connection id was not issued by a broker.
	ErrInvalidConnID = errors.New("pubsub: invalid connection id")
	// ErrInvalidData: a message is not a single valid JSON value.
	ErrInvalidData error = &codedError{"pubsub: message data is not valid JSON", "bad_request"}
	// ErrTooLarge: a message exceeds the maximum message size.
	ErrTooLarge error = &codedError{"pubsub: message too large", "bad_request"}
	// ErrForbidden: an authorization hook denied the operation.
	ErrForbidden error = &codedError{"pubsub: forbidden", "forbidden"}
	// ErrTooManyRooms: a connection reached its room limit.
	ErrTooManyRooms error = &codedError{"pubsub: too many rooms on one connection", "too_many_rooms"}
	// ErrSlowConsumer: a connection was closed because its send queue overflowed.
	ErrSlowConsumer = errors.New("pubsub: slow consumer")
	// ErrUnsupportedTransport: a request to Accept is neither a WebSocket
	// upgrade nor a GET that accepts text/event-stream.
	ErrUnsupportedTransport = errors.New("pubsub: request is neither WebSocket nor SSE")
	// ErrIdleTimeout is the reason (Conn.Err) of a connection that did not
	// answer a keep-alive ping in time.
	ErrIdleTimeout = errors.New("pubsub: keep-alive timeout")
	// ErrSessionExpired is the reason (Conn.Err) of a connection whose
	// session expiry (ContextWithExpiry) passed without a refresh.
	ErrSessionExpired = errors.New("pubsub: session expired")
	// ErrDisconnected is the reason (Conn.Err) of a connection ended by
	// DisconnectUser or DisconnectConn; the error names the reason given.
	ErrDisconnected = errors.New("pubsub: disconnected by the server")
	// ErrNoSuchConn: the connection is known to be gone (its instance
	// answered that it has no such connection, or no instance answers for
	// its id).
	ErrNoSuchConn = errors.New("pubsub: no such connection")
	// ErrInvalidReason: a disconnect reason that is not valid UTF-8 or is
	// longer than the 123 bytes a WebSocket close frame carries.
	ErrInvalidReason = errors.New("pubsub: invalid disconnect reason")
	// errInvalidUTF8 is Conn.Err of a WebSocket whose client sent a text
	// frame that is not UTF-8 (closed with 1007).
	errInvalidUTF8 = errors.New("pubsub: the client sent a text frame that is not valid UTF-8")
	// ErrInvalidQuery: a connection's query string cannot be parsed (more
	// than 10,000 parameters, a ';'): 400, not a connection without rooms.
	ErrInvalidQuery = errors.New("pubsub: invalid query")
	// ErrUnsupportedProtocol: the client asked for a protocol version
	// (the "protocol" parameter) this server does not speak: 400.
	ErrUnsupportedProtocol = errors.New("pubsub: unsupported protocol version")
	// errPostBusy: a frame POSTed for a connection that is still handling
	// the previous one (429).
	errPostBusy = errors.New("pubsub: one POSTed frame at a time per connection")
	// ErrStreamMaxAge is the reason (Conn.Err) of an SSE stream ended at
	// its maximum age (WithSSEMaxAge); its client reconnects.
	ErrStreamMaxAge = errors.New("pubsub: SSE stream reached its maximum age")
	// ErrNoHistory: the room has no history configured.
	ErrNoHistory error = &codedError{"pubsub: room has no history", "no_history"}
	// ErrInvalidID: a resume position is not a store position.
	ErrInvalidID error = &codedError{"pubsub: invalid message id", "invalid_id"}
	// ErrInvalidKey: an idempotency key is empty, longer than 64 bytes or
	// holds spaces or control characters.
	ErrInvalidKey error = &codedError{"pubsub: invalid idempotency key", "bad_request"}
	// ErrOutcomeUnknown: the history store did not answer before the
	// context ended, and the message may have been stored. Publishing it
	// again with PublishOnce and the same key stores it at most once.
	ErrOutcomeUnknown error = &codedError{"pubsub: publish outcome unknown (it may have been stored; publish again with the same idempotency key)", "outcome_unknown"}
	// ErrStoreFailed: the history store cannot write (its disk is full):
	// the message is not stored — unless the error is also
	// ErrOutcomeUnknown (the store stopped answering while its disk was
	// full: publish again with the same key). While the store is known to
	// fail, publishes fail at once but for one probe a second. Rooms
	// without history and live delivery are not affected.
	ErrStoreFailed error = &codedError{"pubsub: the history store cannot write", "store_failed"}
	// ErrMisconfigured: the host's middleware hides the connection from the
	// handler (a ResponseWriter wrapper without Unwrap, http.TimeoutHandler),
	// so the transport cannot work on this request. The client gets a 500
	// with "Roomcast-Error: misconfigured"; the broker logs, at Error, the
	// wrapper and the fix.
	ErrMisconfigured = errors.New("pubsub: the host's middleware prevents a live connection")
)

// codedError is a sentinel error with the code a client's error frame
// carries for it.
type codedError struct{ msg, code string }

func (e *codedError) Error() string        { return e.msg }
func (e *codedError) ProtocolCode() string { return e.code }
