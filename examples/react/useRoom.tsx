// React bindings for @roomcast/client: one connection for the whole app
// (LiveProvider), opened in the browser only (effects never run in a server
// render, so this works as is in Next.js client components), and a hook that
// follows one room. See README.md beside this file.
import { createContext, useContext, useEffect, useState, type ReactNode } from "react";
import { connect, type Frame, type Live, type Options, type State } from "@roomcast/client";

const LiveContext = createContext<Live | null>(null);

/**
 * Opens the app's connection after the first render in the browser and closes it on unmount.
 * options are read when url changes.
 */
export function LiveProvider({ url = "/live", options, children }: { url?: string; options?: Options; children: ReactNode }) {
  const [live, setLive] = useState<Live | null>(null);
  useEffect(() => {
    const l = connect(url, options);
    setLive(l);
    return () => l.close();
  }, [url]);
  return <LiveContext.Provider value={live}>{children}</LiveContext.Provider>;
}

/** The app's connection: null in a server render and until LiveProvider's effect has run. */
export function useLive(): Live | null {
  return useContext(LiveContext);
}

/**
 * The last max messages of room (newest last) and the connection's state. Subscribes once live is there,
 * resubscribes when room changes, unsubscribes on unmount; the connection stays open for the others.
 */
export function useRoom<T = unknown>(live: Live | null, room: string, max = 100): { messages: Frame<T>[]; state: State } {
  const [messages, setMessages] = useState<Frame<T>[]>([]);
  const [state, setState] = useState<State>(live?.state ?? "closed");
  useEffect(() => {
    if (!live) return;
    setMessages([]);
    setState(live.state);
    const offState = live.on("state", (s) => setState(s));
    const off = live.subscribe<T>(room, (_, frame) => setMessages((m) => [...m, frame].slice(-max)));
    return () => {
      off();
      offState();
    };
  }, [live, room, max]);
  return { messages, state };
}
