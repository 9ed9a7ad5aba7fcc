// Vue bindings for @roomcast/client: one connection for the whole app
// (useLive), opened in the browser only, and a composable that follows one
// room. Nothing here runs in a server render (Nuxt): the work starts in
// onMounted. See README.md beside this file.
import { onMounted, onUnmounted, ref, shallowRef, toValue, watch, type MaybeRefOrGetter, type Ref, type ShallowRef } from "vue";
import { connect, type Frame, type Live, type State } from "@roomcast/client";

let shared: Live | undefined;

/**
 * The app's one connection, opened on first use (with that call's url). Call it in the browser (onMounted,
 * an event handler), not in setup, which a server render runs too.
 */
export function useLive(url = "/live"): Live {
  return (shared ??= connect(url));
}

/**
 * The last max messages of room (a string, a ref or a getter; newest last) and the connection's state.
 * live is the connection, or a function that returns it (useLive), called once mounted. Subscribes once
 * mounted, resubscribes when room changes, unsubscribes on unmount; the connection stays open for the others.
 */
export function useRoom<T = unknown>(
  live: Live | (() => Live),
  room: MaybeRefOrGetter<string>,
  max = 100,
): { messages: ShallowRef<Frame<T>[]>; state: Ref<State> } {
  const messages = shallowRef<Frame<T>[]>([]);
  const state = ref<State>("closed");
  let stop = () => {};
  onMounted(() => {
    const l = typeof live === "function" ? live() : live;
    let off = () => {};
    state.value = l.state;
    const offState = l.on("state", (s) => {
      state.value = s;
    });
    const unwatch = watch(
      () => toValue(room),
      (name) => {
        off();
        messages.value = [];
        off = l.subscribe<T>(name, (_, frame) => {
          messages.value = [...messages.value, frame].slice(-max);
        });
      },
      { immediate: true },
    );
    stop = () => {
      unwatch();
      off();
      offState();
    };
  });
  onUnmounted(() => stop());
  return { messages, state };
}
