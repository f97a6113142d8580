// The polling loop of a run's live page, shared by package runs (run.js) and
// pipeline runs (pipeline.js): fetch the run's JSON every `ms` while the tab is
// visible, hand it to `show`, and reload the page once when the run has ended
// (for its final figures). A lost session stops the loop and says so; other
// errors retry after `retryMs`.
window.portalLivePoll = function (opts) {
  "use strict";
  var box = opts.box;
  var note = opts.note;

  function poll() {
    if (document.hidden) { setTimeout(poll, opts.ms); return; }
    fetch(opts.url(), {credentials: "same-origin", headers: {"Accept": "application/json", "X-Requested-With": "fetch"}})
      .then(function (r) {
        // A logged-out request lands on the login page: stop, and say so.
        if (r.redirected) { throw new Error("session expired, reload the page"); }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (d) {
        opts.show(d);
        box.setAttribute("data-active", d.active ? "true" : "false");
        if (d.active) {
          note.textContent = opts.every + " · updated " + new Date().toLocaleTimeString();
          setTimeout(poll, opts.ms);
        } else {
          note.textContent = "The run has ended; reloading…";
          window.location.reload();
        }
      })
      .catch(function (err) {
        note.textContent = "Refresh failed (" + err.message + ")";
        if (err.message.indexOf("session expired") === -1) { setTimeout(poll, opts.retryMs || opts.ms); }
      });
  }

  setTimeout(poll, opts.ms);
  return poll;
};
