// Refreshes the dashboard panels in place, without reloading the page.
(function () {
  "use strict";
  var box = document.getElementById("portal-dashboard");
  if (!box) { return; }
  var url = box.getAttribute("data-refresh-url");
  var seconds = parseInt(box.getAttribute("data-refresh-seconds"), 10) || 30;
  var stamp = document.getElementById("portal-refreshed");
  function refresh() {
    if (document.hidden) { return; }
    fetch(url, {credentials: "same-origin", headers: {"X-Requested-With": "fetch"}})
      .then(function (r) {
        // A logged-out request is redirected to the login page: never paste that
        // page into the dashboard; keep the last panels and say what happened.
        if (r.redirected) { throw new Error("session expired, reload the page"); }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        box.innerHTML = html;
        box.setAttribute("data-refreshed", String(Date.now()));
        if (stamp) { stamp.textContent = "updated " + new Date().toLocaleTimeString(); }
      })
      .catch(function (err) {
        if (stamp) { stamp.textContent = "refresh failed (" + err.message + ")"; }
      });
  }
  window.portalDashboardRefresh = refresh;
  setInterval(refresh, seconds * 1000);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) { refresh(); } });
})();
