// Refreshes a pipeline run's page while it is pending or in progress: the run's and
// each step's status and duration, exit codes, and the new output of each command
// (the page asks only for chunks after the last one it has). Once the run has
// ended it reloads once, for the final timings and error, and stops.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var box = document.getElementById("pipe-live");
  if (!box || box.getAttribute("data-active") !== "true") { return; }
  var url = box.getAttribute("data-live-url");
  var ms = parseInt(box.getAttribute("data-refresh-ms"), 10) || 1000;
  var after = box.getAttribute("data-after") || "0";
  var note = document.getElementById("pipe-live-note");

  function setText(el, text) {
    if (el && el.textContent !== text) { el.textContent = text; }
  }

  function setBadge(el, status, label, tone) {
    if (!el) { return; }
    setText(el, label);
    el.className = el.className.replace(/\bportal-badge-\w+/, "portal-badge-" + tone);
    el.setAttribute("data-status", status);
  }

  function find(root, attr, id) {
    // Ids are UUIDs: safe inside a quoted attribute selector.
    return root.querySelector("[" + attr + '="' + id + '"]');
  }

  function showCommand(el, c) {
    var exit = el.querySelector(".pipe-cmd-exit");
    setText(exit, c.exit_display);
    exit.className = "pipe-cmd-exit pipe-exit-" + c.exit_tone;
    if (!c.output) { return; }
    var pre = el.querySelector(".pipe-cmd-output");
    // Follow the end of the output, unless the reader scrolled up to read.
    var atEnd = pre.hidden || pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
    pre.hidden = false;
    pre.appendChild(document.createTextNode(c.output));
    if (atEnd) { pre.scrollTop = pre.scrollHeight; }
  }

  function show(d) {
    setBadge(document.getElementById("pipe-live-status"), d.status, d.status_display, d.tone);
    setText(document.getElementById("pipe-live-elapsed"), d.elapsed_display);
    setText(document.getElementById("pipe-live-steps"),
      d.steps_ended + " of " + d.steps.length + " step" + (d.steps.length === 1 ? "" : "s") + " ended");
    document.getElementById("pipe-live-cancel").hidden = !(d.active && d.cancel_requested);
    d.steps.forEach(function (s) {
      var el = find(document, "data-step-id", s.step_id);
      if (!el) { return; }
      setBadge(el.querySelector(".pipe-step-status"), s.status, s.status_display, s.tone);
      setText(el.querySelector(".pipe-step-duration"), s.duration_display);
      var error = el.querySelector(".pipe-step-error");
      setText(error, s.error);
      error.hidden = !s.error;
      s.commands.forEach(function (c) {
        var cmd = find(el, "data-cmd-id", c.cmd_id);
        if (cmd) { showCommand(cmd, c); }
      });
    });
    after = String(d.after);
    box.setAttribute("data-after", after);
    box.setAttribute("data-refreshed", String(Date.now()));
  }

  window.portalLivePoll({
    box: box,
    note: note,
    url: function () { return url + "?after=" + encodeURIComponent(after); },
    ms: ms,
    retryMs: ms * 5,
    every: "Refreshes every second",
    show: show,
  });
});
