// mlws studio: draws uPlot charts from the page's JSON blocks and keeps a running run's log and
// metrics live over server-sent events. No inline scripts (the pages' CSP forbids them), no
// innerHTML with data: every name and value reaches the DOM as text.
(function () {
  "use strict";
  var root = document.body.getAttribute("data-root") || "";
  var COLORS = ["#0b5cd5", "#d5420b", "#1a8f3a", "#8f1a86", "#b38f00", "#00838f", "#5d4037", "#455a64"];

  function readJSON(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  function chartFor(name) {
    var figs = document.querySelectorAll("figure.chart");
    for (var i = 0; i < figs.length; i++) {
      if (figs[i].getAttribute("data-name") === name) return figs[i];
    }
    return null;
  }

  // series: [{label, points: [[x, y], ...]}]; uPlot wants one shared x array, so series are
  // joined on their steps (null where a run has no value at that step).
  function toColumns(series) {
    var xs = {};
    series.forEach(function (s) { s.points.forEach(function (p) { xs[p[0]] = true; }); });
    var x = Object.keys(xs).map(Number).sort(function (a, b) { return a - b; });
    var index = {};
    x.forEach(function (v, i) { index[v] = i; });
    var cols = [x];
    series.forEach(function (s) {
      var ys = new Array(x.length).fill(null);
      s.points.forEach(function (p) { ys[index[p[0]]] = p[1]; });
      cols.push(ys);
    });
    return cols;
  }

  // The charts' view toggles (run and compare pages): EMA smoothing weight, log y scale.
  var view = { smooth: 0, log: false };
  var drawn = [];  // {fig, series, plot}: every metric chart, redrawn when the view changes

  // Smoothing as TensorBoard's: an exponential moving average, debiased at the start; a log
  // scale cannot show values <= 0, so they become gaps.
  function viewed(cols) {
    return [cols[0]].concat(cols.slice(1).map(function (ys) {
      var acc = 0, n = 0;
      return ys.map(function (y) {
        if (y === null) return null;
        var v = y;
        if (view.smooth > 0) {
          acc = acc * view.smooth + (1 - view.smooth) * y;
          n += 1;
          v = acc / (1 - Math.pow(view.smooth, n));
        }
        return view.log && !(v > 0) ? null : v;
      });
    }));
  }

  function columns(series) { return viewed(toColumns(series)); }

  // The first charts of a page are drawn at once; the rest (a run with 50 metrics, a compare
  // of many) when they come near the window, so the first paint waits for what is seen.
  var EAGER = 6;
  var lazy = window.IntersectionObserver ? new IntersectionObserver(function (seen) {
    seen.forEach(function (s) {
      if (!s.isIntersecting) return;
      lazy.unobserve(s.target);
      drawn.forEach(function (e) {
        if (e.fig === s.target && !e.plot) e.plot = makePlot(e.fig, e.series);
      });
    });
  }, { rootMargin: "300px" }) : null;

  function draw(fig, series) {
    var entry = { fig: fig, series: series, plot: null };
    if (lazy && drawn.length >= EAGER) lazy.observe(fig);
    else entry.plot = makePlot(fig, series);
    drawn.push(entry);
    return entry;
  }

  function redrawAll() {
    drawn.forEach(function (e) {
      if (!e.plot) return;  // not drawn yet: it draws with the view of when it comes into sight
      e.plot.destroy();
      e.plot = makePlot(e.fig, e.series);
    });
  }

  function chartControls() {
    var log = document.getElementById("log-scale");
    var smooth = document.getElementById("smoothing");
    if (!log || !smooth) return;
    var said = document.getElementById("smoothing-value");
    log.addEventListener("change", function () { view.log = log.checked; redrawAll(); });
    smooth.addEventListener("input", function () {
      view.smooth = Math.min(0.999, Math.max(0, Number(smooth.value) || 0));
      if (said) said.textContent = view.smooth.toFixed(2);
      redrawAll();
    });
  }

  // A chart fills its box up to 460 px: in a narrow window it shrinks rather than widen the page.
  function chartWidth(fig, most) {
    var room = fig.parentNode ? fig.parentNode.clientWidth - 12 : most;
    return Math.max(160, Math.min(most, room || most));
  }

  function makePlot(fig, series) {
    var opts = {
      width: chartWidth(fig, 460), height: 240,
      scales: { x: { time: false }, y: { distr: view.log ? 3 : 1 } },
      series: [{ label: "step" }].concat(series.map(function (s, i) {
        return { label: s.label, stroke: COLORS[i % COLORS.length], spanGaps: true, points: { show: false } };
      })),
    };
    return new uPlot(opts, columns(series), fig);
  }

  var plots = {};  // metric name -> {plot, series}

  function runPage() {
    var charts = readJSON("charts-data");
    if (!charts) return;
    Object.keys(charts).forEach(function (name) {
      var fig = chartFor(name);
      var series = [{ label: name, points: charts[name] }];
      plots[name] = draw(fig, series);
    });
    var live = readJSON("live-data");
    if (live && !live.terminal) follow(live, charts);
  }

  function addPoints(name, points) {
    var entry = plots[name];
    if (!entry) {
      var fig = document.createElement("figure");
      fig.className = "chart";
      fig.setAttribute("data-name", name);
      var cap = document.createElement("figcaption");
      cap.textContent = name;
      fig.appendChild(cap);
      document.getElementById("charts").appendChild(fig);
      var series = [{ label: name, points: points }];
      plots[name] = draw(fig, series);
      return;
    }
    entry.series[0].points = entry.series[0].points.concat(points);
    if (entry.plot) entry.plot.setData(columns(entry.series));
  }

  function follow(live, charts) {
    var state = { offset: live.offset, steps: {} };
    Object.keys(charts).forEach(function (name) {
      var pts = charts[name];
      if (pts.length) state.steps[name] = pts[pts.length - 1][0];
    });
    var log = document.getElementById("log");
    var status = document.getElementById("status");
    var ended = false;
    function open() {
      var url = root + "/runs/" + encodeURIComponent(live.run) + "/events?state=" +
        encodeURIComponent(JSON.stringify(state));
      var es = new EventSource(url);
      es.addEventListener("log", function (e) {
        var d = JSON.parse(e.data);
        state.offset = d.offset;
        var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        log.appendChild(document.createTextNode(d.text));
        if (atEnd) log.scrollTop = log.scrollHeight;
      });
      es.addEventListener("metric", function (e) {
        var d = JSON.parse(e.data);
        if (d.points.length) state.steps[d.name] = d.points[d.points.length - 1][0];
        addPoints(d.name, d.points);
      });
      es.addEventListener("status", function (e) {
        var d = JSON.parse(e.data);
        status.textContent = d.status;
        status.className = "status s-" + d.status.toLowerCase();
      });
      es.addEventListener("end", function () { ended = true; es.close(); });
      es.addEventListener("gone", function () { ended = true; es.close(); });
      // Signed out (or the token revoked) while watching: the next page load shows the sign-in.
      es.addEventListener("signedout", function () { ended = true; es.close(); });
      // The browser would reconnect with the first URL (and its old offsets): reopen with now's.
      es.onerror = function () {
        es.close();
        if (!ended) setTimeout(open, 1000);
      };
    }
    open();
  }

  function comparePage() {
    var data = readJSON("compare-data");
    if (!data) return;
    Object.keys(data.charts).forEach(function (name) {
      var per = data.charts[name];
      var series = data.runs.filter(function (r) { return per[r.id]; }).map(function (r) {
        return { label: r.display_name || r.id, points: per[r.id] };
      });
      draw(chartFor(name), series);
    });
  }

  // Service page: requests/s with 4xx and 5xx errors/s, and latency p50/p95, over time.
  function timeChart(fig, t, series) {
    var opts = {
      width: chartWidth(fig, 460), height: 220,
      scales: { x: { time: true } },
      series: [{ label: "time" }].concat(series.map(function (s, i) {
        // Points shown: a quiet service has requests in few buckets (a lone point has no line).
        return { label: s.label, stroke: COLORS[i % COLORS.length], spanGaps: false, points: { show: true, size: 4 } };
      })),
    };
    return new uPlot(opts, [t].concat(series.map(function (s) { return s.values; })), fig);
  }

  function servicePage() {
    var tele = readJSON("telemetry-data");
    if (tele && tele.t.length && chartFor("requests")) {
      timeChart(chartFor("requests"), tele.t, [
        { label: "requests/s", values: tele.rps },
        { label: "4xx/s", values: tele.errors_4xx },
        { label: "5xx/s", values: tele.errors_5xx },
      ]);
      timeChart(chartFor("latency"), tele.t, [
        { label: "p50 ms", values: tele.p50 },
        { label: "p95 ms", values: tele.p95 },
      ]);
    }
    var meta = document.querySelector("meta[name=csrf-token]");
    var show = document.getElementById("keys-show");
    if (show) {
      // Keys come only from a POST with the page's CSRF token, never with the page itself.
      show.addEventListener("click", function () {
        var out = document.getElementById("keys");
        fetch(root + "/services/" + encodeURIComponent(show.getAttribute("data-service")) + "/keys", {
          method: "POST",
          credentials: "same-origin",
          headers: { "Accept": "application/json", "X-CSRF-Token": meta ? meta.getAttribute("content") : "" },
        }).then(function (r) { return r.json(); }).then(function (d) {
          out.textContent = d.error ? d.error
            : "primary:   " + (d.primaryKey || "(auth off)") + "\nsecondary: " + (d.secondaryKey || "(auth off)");
        }).catch(function (err) { out.textContent = String(err); });
      });
    }
    var form = document.getElementById("try");
    if (!form) return;
    var result = document.getElementById("try-result");
    var said = document.getElementById("try-status");
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      said.textContent = "sending…";
      result.textContent = "";
      fetch(root + "/services/" + encodeURIComponent(form.getAttribute("data-service")) + "/try", {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          "Accept": "application/json",
          "X-CSRF-Token": meta ? meta.getAttribute("content") : "",
        },
        body: document.getElementById("try-body").value,
      }).then(function (r) {
        return r.json().then(function (d) { return { ok: r.ok, d: d }; });
      }).then(function (x) {
        var d = x.d;
        if (!x.ok) { said.textContent = "refused"; result.textContent = d.error; return; }
        if (d.status === null) { said.textContent = "not sent"; result.textContent = d.error; return; }
        said.textContent = "status " + d.status + " · " + d.ms + " ms" + (d.truncated ? " · cut" : "");
        var text = d.body;
        try { text = JSON.stringify(JSON.parse(d.body), null, 1); } catch (err) { /* not JSON: as is */ }
        result.textContent = text;
      }).catch(function (err) { said.textContent = "failed"; result.textContent = String(err); });
    });
  }

  function sweepView() {
    var data = readJSON("sweep-data");
    var fig = document.getElementById("parcoords");
    if (data && fig && window.mlwsParcoords) window.mlwsParcoords(fig, data);
  }

  // The sign-in page, reached by a link from another site, was loaded without the session
  // cookie (SameSite=Strict); this same-site request carries it: signed in, go on.
  function signinPage() {
    var form = document.getElementById("signin-form");
    if (!form) return;
    fetch(root + "/signin/session.json", { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (d) {
        if (d.signed_in) window.location.replace(form.querySelector("input[name=next]").value);
      })
      .catch(function () { /* stay on the sign-in page */ });
  }

  // The runs table: while some of its runs are active, their status (and duration) is polled
  // from a small JSON URL every few seconds, without reloading the page.
  function runsTable() {
    var rows = document.querySelectorAll("#runs tr[data-run]");
    if (!rows.length) return;
    var ended = { Completed: 1, Failed: 1, Canceled: 1 };
    function duration(secs) { // as the page's own (app._duration)
      if (secs < 60) return secs.toFixed(1) + "s";
      var m = Math.floor(secs / 60), s = Math.floor(secs) % 60, h = Math.floor(m / 60);
      m = m % 60;
      function two(n) { return (n < 10 ? "0" : "") + n; }
      return h ? h + "h" + two(m) + "m" : m + "m" + two(s) + "s";
    }
    function active() {
      var ids = [];
      rows.forEach(function (tr) {
        var s = tr.querySelector(".status");
        if (s && !ended[s.textContent]) ids.push(tr.getAttribute("data-run"));
      });
      return ids;
    }
    function poll() {
      var ids = active();
      if (!ids.length) return;
      fetch(root + "/runs/status.json?ids=" + ids.map(encodeURIComponent).join(","), {
        credentials: "same-origin",
      }).then(function (r) { return r.json(); }).then(function (d) {
        rows.forEach(function (tr) {
          var x = d[tr.getAttribute("data-run")];
          if (!x) return;
          var s = tr.querySelector(".status");
          s.textContent = x.status;
          s.className = "status s-" + x.status.toLowerCase();
          var dur = tr.querySelector(".duration");
          if (dur && x.duration !== null) dur.textContent = duration(x.duration);
        });
        setTimeout(poll, 3000);
      }).catch(function () { setTimeout(poll, 10000); });
    }
    setTimeout(poll, 3000);
  }

  signinPage();
  chartControls();
  runsTable();
  runPage();
  sweepView();
  comparePage();
  servicePage();
  // The page's charts are drawn: the next frame shows them (bench 18g reads this mark).
  if (window.performance && performance.mark) {
    requestAnimationFrame(function () { performance.mark("mlws-charts-drawn"); });
  }
})();
