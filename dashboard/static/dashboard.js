// The dashboard's own script: htmx swaps the server's escaped fragments
// in; this only caps the live list and draws the charts. It never turns
// data into markup: chart labels are set as text.
(function () {
  "use strict";

  // The live list keeps the newest rows only, however fast they arrive,
  // so the page's size stays flat.
  function capTapRows() {
    var live = document.getElementById("tap-live");
    var rows = document.getElementById("tap-rows");
    if (!live || !rows) { return; }
    var max = parseInt(live.dataset.maxRows, 10) || 200;
    new MutationObserver(function () {
      while (rows.rows.length > max) { rows.deleteRow(rows.rows.length - 1); }
    }).observe(rows, { childList: true });
  }

  function fmt(v, unit) {
    return v === null || v === undefined ? "-" : (unit === "%" ? Math.round(v * 100) + "%" : v.toFixed(1) + "rps");
  }

  function lastValue(a) {
    for (var i = a.length - 1; i >= 0; i--) { if (a[i] !== null) { return a[i]; } }
    return null;
  }

  function drawCharts(history) {
    var cells = document.querySelectorAll("#deployments td.chart[data-deploy]");
    cells.forEach(function (cell) {
      if (cell.childElementCount > 0) { return; }
      var s = history.deployments[cell.dataset.deploy];
      var summary = document.createElement("span");
      summary.className = "chart-summary";
      if (!s) {
        summary.textContent = "no traffic in the history";
        cell.appendChild(summary);
        return;
      }
      var tls = s.tls.map(function (v) { return v === null ? null : v * 100; });
      var box = document.createElement("div");
      cell.appendChild(box);
      // Two scales: requests per second, and the TLS share in percent.
      new window.uPlot({
        width: 140, height: 40,
        legend: { show: false }, cursor: { show: false },
        scales: { x: { time: true }, rps: { auto: true }, pct: { range: [0, 100] } },
        axes: [{ show: false }, { show: false, scale: "rps" }, { show: false, scale: "pct" }],
        series: [{}, { label: "RPS", scale: "rps", stroke: "#1f5fbf", width: 1.5, points: { show: false } },
          { label: "TLS %", scale: "pct", stroke: "#0a6b2c", width: 1.5, dash: [4, 3], points: { show: false } }]
      }, [history.times, s.rps, tls], box);
      // The figures as words too: never a picture alone.
      summary.textContent = "RPS " + fmt(lastValue(s.rps)) + " (solid), TLS " + fmt(lastValue(s.tls), "%") +
        " (dashed), " + history.times.length + " windows";
      cell.appendChild(summary);
    });
  }

  function loadCharts() {
    var table = document.getElementById("deployments");
    if (!table || !table.dataset.history || !window.uPlot) { return; }
    fetch(table.dataset.history).then(function (r) {
      if (!r.ok) { return r.text().then(function (t) { throw new Error(t); }); }
      return r.json();
    }).then(function (h) {
      window.dashboardHistory = h;
      drawCharts(h);
    }).catch(function (err) {
      var note = document.createElement("p");
      note.className = "warning";
      note.textContent = "Cannot draw the charts: " + err.message;
      table.after(note);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    capTapRows();
    loadCharts();
  });
  // A live refresh replaces the deployments' rows, chart cells included.
  document.addEventListener("htmx:sseMessage", function (e) {
    if (e.detail && e.detail.type === "deployments") { loadCharts(); }
  });
})();
