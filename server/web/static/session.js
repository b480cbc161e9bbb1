// Remote session console: run an action without leaving the page, stream its replies
// (EventSource on the console's cookie-authenticated copy of /api/v1/commands/{id}/stream),
// cancel it, then refresh the history and the fetched files' download links. Without
// JavaScript the forms post and redirect.
(function () {
  "use strict";
  const root = document.getElementById("console");
  if (!root) return;
  const csrf = root.dataset.csrf;
  const out = document.getElementById("run-output");
  const status = document.getElementById("run-status");
  const bar = document.getElementById("run-progress");
  const title = document.getElementById("run-title");
  const finalState = document.getElementById("run-state");
  const cancel = document.getElementById("run-cancel");
  let source = null;
  let running = null;

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "Accept": "application/json" },
    });
  }

  async function answerOf(response) {
    try { return await response.json(); } catch (e) { return { detail: response.status + " " + response.statusText }; }
  }

  // Output chunks are appended in chunk order; a chunk that arrives early waits for its turn.
  const pending = new Map();
  let nextChunk = 0;
  let sawChunks = false;
  function append(text) { if (text) out.appendChild(document.createTextNode(text)); }
  function chunk(index, text) {
    sawChunks = true;
    pending.set(index, text);
    while (pending.has(nextChunk)) { append(pending.get(nextChunk)); pending.delete(nextChunk); nextChunk += 1; }
  }

  function finish(state) {
    if (source) { source.close(); source = null; }
    pending.forEach(function (text) { append(text); });  // a gap never arrived: show what did
    pending.clear();
    finalState.textContent = "Finished: " + state;
    finalState.dataset.state = state;
    cancel.disabled = true;
    bar.value = 1;
    running = null;
    refresh();
  }

  function on(kind, handler) {
    source.addEventListener(kind, function (ev) { handler(JSON.parse(ev.data)); });
  }

  function follow(command) {
    running = command;
    out.textContent = "";
    pending.clear(); nextChunk = 0; sawChunks = false;
    title.textContent = "— " + command.action;
    let received = 0;  // file.fetch: its output is the file in base64, counted rather than shown
    finalState.textContent = ""; finalState.dataset.state = "";
    bar.value = 0;
    bar.removeAttribute("value");  // indeterminate until the device reports progress
    status.textContent = "Sent " + command.action + "; waiting for the device…";
    cancel.disabled = false;
    source = new EventSource(command.stream);
    on("accepted", function () { status.textContent = "The device accepted " + command.action + "; running…"; });
    on("progress", function (d) {
      if (typeof d.progress === "number") bar.value = d.progress;
      if (d.output) status.textContent = d.output;
    });
    on("output", function (d) {
      if (!command.file) { chunk(d.chunk || 0, d.output || ""); return; }
      received += 1;
      status.textContent = "Receiving the file: " + received + " chunk" + (received === 1 ? "" : "s") + "…";
    });
    on("result", function (d) {
      if (!sawChunks) append(d.output || "");
      status.textContent = d.ok ? "Succeeded." : "Finished with a failure.";
    });
    on("error", function (d) {
      if (!sawChunks) append(d.output || "");
      status.textContent = "Error" + (d.reason ? ": " + d.reason : "") + ".";
    });
    on("rejected", function (d) { status.textContent = "The device refused it" + (d.reason ? ": " + d.reason : "") + "."; });
    on("end", function (d) { finish(d.state); });
    source.onerror = function () {
      // EventSource reconnects by itself (Last-Event-ID); say so while it does.
      if (running && source && source.readyState === EventSource.CONNECTING) status.textContent = "Connection lost; reconnecting…";
    };
  }

  document.querySelectorAll("form.action-form").forEach(function (form) {
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      const error = form.querySelector(".form-error");
      error.hidden = true;
      if (running) {
        error.textContent = running.action + " is still running: wait for it or cancel it.";
        error.hidden = false;
        return;
      }
      // form.action would be the input named "action": read the attribute
      const response = await post(form.getAttribute("action"), new URLSearchParams(new FormData(form)));
      const body = await answerOf(response);
      if (response.status === 401) { window.location.reload(); return; }
      if (!response.ok) {
        error.textContent = body.detail || "The command was refused.";
        error.hidden = false;
        const field = body.field && body.field.indexOf("args.") === 0 ? form.querySelector('[name="arg.' + body.field.slice(5) + '"]') : null;
        if (field) field.focus();
        return;
      }
      follow(body);
      out.focus({ preventScroll: true });
    });
  });

  cancel.addEventListener("click", async function () {
    if (!running) return;
    cancel.disabled = true;
    const response = await post(running.cancel, new URLSearchParams({ csrf: csrf }));
    const body = await answerOf(response);
    status.textContent = response.ok ? "Cancel requested; waiting for the device to stop…" : (body.detail || "Could not cancel.");
    if (!response.ok) cancel.disabled = false;
  });

  // Re-read the page's history and facts once a command ends (its state, the incident's).
  async function refresh() {
    const response = await fetch(window.location.pathname, { credentials: "same-origin" });
    if (!response.ok) return;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    ["history", "session-facts", "fetched-files"].forEach(function (id) {
      const fresh = doc.getElementById(id);
      const here = document.getElementById(id);
      if (fresh && here) here.replaceWith(fresh);
    });
  }

  // The session's time limit, counted down.
  const left = document.getElementById("time-left");
  if (left) {
    const until = Date.now() + 1000 * Number(left.dataset.seconds);
    const tick = function () {
      const s = Math.max(0, Math.round((until - Date.now()) / 1000));
      const el = document.getElementById("time-left");  // may have been refreshed
      if (el) el.textContent = Math.floor(s / 60) + " min " + (s % 60) + " s";
      if (s > 0) setTimeout(tick, 1000);
    };
    setTimeout(tick, 1000);
  }
})();
