// weir's small script: local times, live regions (Server-Sent Events), log follow, confirms.
"use strict";

// Shows <time datetime="..."> in the browser's time zone, with UTC on hover.
function localizeTimes(root) {
  const fmt = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  });
  for (const el of root.querySelectorAll("time[datetime]")) {
    const d = new Date(el.getAttribute("datetime"));
    if (isNaN(d)) continue;
    el.textContent = fmt.format(d);
    el.title = d.toISOString().replace(".000Z", "Z").replace("T", " ") + " UTC";
  }
}

// An element with data-live="URL" is replaced by each `html` event of that stream.
function liveRegions() {
  for (const el of document.querySelectorAll("[data-live]")) {
    const source = new EventSource(el.dataset.live);
    source.addEventListener("html", (e) => {
      el.innerHTML = e.data;
      localizeTimes(el);
      // The run page's state pill follows its task table.
      const table = el.querySelector("[data-run-state]");
      const pill = document.getElementById("run-state");
      if (table && pill) {
        pill.textContent = table.dataset.runState;
        pill.className = "pill state-" + table.dataset.runState;
      }
    });
    source.addEventListener("error", () => { /* EventSource reconnects by itself */ });
  }
}

// The task page's log: new lines appended as they come; Follow keeps the end in view.
function liveLog() {
  const log = document.getElementById("log");
  if (!log) return;
  const follow = document.getElementById("follow");
  const stop = document.getElementById("log-stop");
  const status = document.getElementById("log-status");
  const toEnd = () => { if (follow && follow.checked) log.scrollTop = log.scrollHeight; };
  toEnd();
  if (!log.dataset.log) return;
  const source = new EventSource(log.dataset.log);
  const close = (text) => { source.close(); if (stop) stop.disabled = true; if (status) status.textContent = text; };
  source.addEventListener("lines", (e) => {
    for (const l of JSON.parse(e.data)) {
      const span = document.createElement("span");
      span.className = "line " + l.stream;
      span.title = l.at;
      span.textContent = l.line;
      log.appendChild(span);
      log.appendChild(document.createTextNode("\n"));
    }
    toEnd();
  });
  source.addEventListener("end", (e) => {
    close("finished: " + e.data);
    const pill = document.getElementById("ti-state");
    if (pill) { pill.textContent = e.data; pill.className = "pill state-" + e.data; }
  });
  if (stop) stop.addEventListener("click", () => close("stopped"));
  if (follow) follow.addEventListener("change", toEnd);
}

// Forms with data-confirm ask first.
function confirms() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (e) => {
      if (!window.confirm(form.dataset.confirm)) e.preventDefault();
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localizeTimes(document);
  liveRegions();
  liveLog();
  confirms();
});
