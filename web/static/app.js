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

// Task names in the grid are indented by their depth (set here, not in a style attribute: the
// Content-Security-Policy allows no inline styles).
function indentTasks(root) {
  for (const th of root.querySelectorAll("th[data-level]")) {
    th.style.paddingLeft = (Number(th.dataset.level) * 10 + 6) + "px";
  }
}

// A <select data-autosubmit> submits its form when changed (no inline handlers under the CSP).
function autosubmit() {
  document.addEventListener("change", (e) => {
    const select = e.target.closest("select[data-autosubmit]");
    if (select && select.form) select.form.submit();
  });
}

// An element with data-live="URL" is replaced by each `html` event of that stream.
function liveRegions() {
  for (const el of document.querySelectorAll("[data-live]")) {
    const source = new EventSource(el.dataset.live);
    source.addEventListener("html", (e) => {
      // What the user set inside the region survives the update: ticked boxes, open details.
      const checked = [...el.querySelectorAll("input[type=checkbox][id]")].map((i) => [i.id, i.checked]);
      const open = [...el.querySelectorAll("details[id]")].map((d) => [d.id, d.open]);
      el.innerHTML = e.data;
      for (const [id, value] of checked) { const i = document.getElementById(id); if (i) i.checked = value; }
      for (const [id, value] of open) { const d = document.getElementById(id); if (d) d.open = value; }
      localizeTimes(el);
      indentTasks(el);
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

// Forms with data-confirm ask first (live regions replace their forms: one listener for all).
function confirms() {
  document.addEventListener("submit", (e) => {
    const form = e.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.dataset.confirm)) e.preventDefault();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  localizeTimes(document);
  indentTasks(document);
  autosubmit();
  liveRegions();
  liveLog();
  confirms();
});
