// Refreshes a run's page while the run is queued or running: status, elapsed time
// against the timeout, and the tail of its log. Stops once the run has ended.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var box = document.getElementById("pkg-live");
  var log = document.getElementById("pkg-log");
  if (!box || !log) { return; }
  log.scrollTop = log.scrollHeight;  // the end of a log is what one reads first
  if (box.getAttribute("data-active") !== "true") { return; }
  var url = box.getAttribute("data-tail-url");
  var seconds = parseInt(box.getAttribute("data-refresh-seconds"), 10) || 2;
  var badge = document.getElementById("pkg-live-status");
  var elapsed = document.getElementById("pkg-live-elapsed");
  var bytes = document.getElementById("pkg-live-bytes");
  var progress = document.getElementById("pkg-progress");
  var bar = document.getElementById("pkg-progress-bar");
  var note = document.getElementById("pkg-live-note");
  var source = document.getElementById("pkg-log-source");

  function size(n) {
    if (n < 1024) { return n + " bytes"; }
    if (n < 1024 * 1024) { return (n / 1024).toFixed(1) + " KB"; }
    return (n / 1024 / 1024).toFixed(1) + " MB";
  }

  function show(d) {
    badge.textContent = d.status_display;
    badge.className = "portal-badge portal-badge-" + d.tone;
    badge.setAttribute("data-status", d.status);
    elapsed.textContent = d.elapsed === null ? "not started" : Math.round(d.elapsed) + " s";
    bytes.textContent = size(d.output_bytes);
    progress.className = "pkg-progress pkg-progress-" + d.tone +
      (d.active && d.progress >= 80 ? " pkg-progress-late" : "");
    progress.setAttribute("aria-valuenow", String(d.progress));
    bar.style.width = d.progress + "%";
    // Follow the end of the log, unless the reader scrolled up to read.
    var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    if (log.textContent !== d.tail) { log.textContent = d.tail; }
    source.textContent = d.tail_source === "database" ? ", as kept in the database" : "";
    if (atEnd) { log.scrollTop = log.scrollHeight; }
    box.setAttribute("data-refreshed", String(Date.now()));
  }

  window.portalRunRefresh = window.portalLivePoll({
    box: box,
    note: note,
    url: function () { return url; },
    ms: seconds * 1000,
    every: "Refreshes every " + seconds + " s",
    show: show,
  });
});
