// A tiny app that imports the client by its package name, as users do.
import { connect } from "@roomcast/client";

const log = document.getElementById("log")!;
const live = connect("/live");
live.subscribe<{ text: string }>("lobby", (data, frame) => {
  const li = document.createElement("li");
  li.textContent = `${frame.from ?? "server"}: ${data.text}`;
  log.append(li);
});
live.on("state", (state) => (document.title = state));
