// The live tap list: rows arrive as server-rendered, escaped <tr> markup
// over server-sent events; the page keeps only the newest rows so a fast
// stream never grows it without bound.
(function () {
  "use strict";
  var status = document.getElementById("tap-status");
  var rows = document.getElementById("tap-rows");
  var dropped = document.getElementById("tap-dropped");
  var state = document.getElementById("tap-state");
  if (!status || !rows || !window.EventSource) { return; }
  var maxRows = parseInt(status.dataset.maxRows, 10) || 200;
  var source = new EventSource(status.dataset.src);
  source.addEventListener("open", function () { state.textContent = "Live. "; });
  source.addEventListener("tap", function (e) {
    rows.insertAdjacentHTML("afterbegin", e.data);
    while (rows.rows.length > maxRows) { rows.deleteRow(rows.rows.length - 1); }
  });
  source.addEventListener("dropped", function (e) { dropped.textContent = e.data; });
  source.addEventListener("failed", function (e) {
    state.textContent = "Tap failed: " + e.data + ". ";
    source.close();
  });
  source.addEventListener("end", function () {
    state.textContent = "The recording ended. ";
    source.close();
  });
})();
