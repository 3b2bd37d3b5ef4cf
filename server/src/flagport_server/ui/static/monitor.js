// The deployment monitor, live: the server pushes the page's body as an HTML fragment over
// server-sent events (rendered and escaped by the server) when something changes, and at
// least every heartbeat. Missing three heartbeats, or a dropped stream, is said plainly.
"use strict";
(function () {
  var live = document.getElementById("live");
  var body = document.getElementById("monitor");
  if (!live || !body || !window.EventSource) return;
  var heartbeat = parseFloat(live.getAttribute("data-heartbeat") || "5") * 1000;
  var lastHeard = Date.now();
  function lost(why) {
    live.className = "live lost";
    live.textContent = "Lost the server (" + why + "): what you see may be stale. Reconnecting…";
  }
  function heard() {
    lastHeard = Date.now();
    live.className = "live";
    live.textContent = "Live · updated " + new Date(lastHeard).toLocaleTimeString();
  }
  var source = new EventSource("/ui/deployment-monitor/events");
  source.addEventListener("monitor", function (event) {
    body.innerHTML = event.data;
    heard();
  });
  source.onopen = heard;
  source.onerror = function () {
    lost("the stream was cut");
    // A session that ended (expired, token revoked) is not a lost server: go sign in again.
    fetch(location.pathname, { redirect: "manual", cache: "no-store" }).then(function (r) {
      if (r.type === "opaqueredirect") location.reload();
    }, function () {});
  };
  setInterval(function () {
    if (Date.now() - lastHeard > 3 * heartbeat) lost("nothing heard for " +
      Math.round((Date.now() - lastHeard) / 1000) + " s");
  }, 1000);
})();
