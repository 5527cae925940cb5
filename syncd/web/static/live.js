// Live updates over Server-Sent Events. The pages are whole without this file: it only swaps
// in the sections the server re-rendered after a change, and appends a running task's log.
(function () {
  "use strict";
  var body = document.body;
  var page = body.getAttribute("data-live");
  var conn = document.getElementById("conn");
  if (!page || !window.EventSource) { return; }
  var meta = document.querySelector('meta[name="csrf"]');
  var csrf = meta ? meta.getAttribute("content") : "";
  var here = window.location.pathname + window.location.search;

  function fill(root) {
    // Sections rendered once for every browser carry empty form fields: make them ours.
    root.querySelectorAll('input[name="csrf"]').forEach(function (el) { if (!el.value) { el.value = csrf; } });
    root.querySelectorAll('input[name="next"]').forEach(function (el) { if (!el.value) { el.value = here; } });
  }
  function show(state, text) {
    if (!conn) { return; }
    conn.textContent = text;
    conn.className = "conn conn-" + state;
  }

  var url = body.getAttribute("data-events") + "?page=" + encodeURIComponent(page);
  var taskId = body.getAttribute("data-task-id");
  if (taskId) {
    url += "&id=" + encodeURIComponent(taskId);
    var offset = body.getAttribute("data-log-offset");
    if (offset) { url += "&log_offset=" + encodeURIComponent(offset); }
  }
  var source = new EventSource(url);
  source.onopen = function () { show("live", "live"); };
  source.onerror = function () { show("lost", "reconnecting…"); };
  source.addEventListener("daemon", function (e) {
    var d = JSON.parse(e.data);
    if (d.connected) { show("live", "live"); } else { show("lost", "daemon unreachable"); }
  });
  source.addEventListener("fragments", function (e) {
    var parts = JSON.parse(e.data);
    Object.keys(parts).forEach(function (id) {
      var el = document.getElementById(id);
      if (!el || el.hasAttribute("data-static")) { return; }
      el.innerHTML = parts[id];
      fill(el);
    });
    body.setAttribute("data-updates", String(Number(body.getAttribute("data-updates") || 0) + 1));
  });
  source.addEventListener("log_paused", function (e) {
    var log = document.getElementById("log-live");
    if (!log || document.getElementById("log-paused")) { return; }
    var note = document.createElement("p");
    note.id = "log-paused";
    note.className = "muted";
    note.textContent = "Live log not followed: " + JSON.parse(e.data).reason + ".";
    var pre = log.parentNode;  // the log's <pre>: the note goes above it
    pre.parentNode.insertBefore(note, pre);
  });
  source.addEventListener("log", function (e) {
    var d = JSON.parse(e.data);
    var log = document.getElementById("log-live");
    if (log) { log.appendChild(document.createTextNode(d.text)); }
  });
}());
