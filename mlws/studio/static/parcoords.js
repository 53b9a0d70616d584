// mlws studio: parallel coordinates in plain SVG (no library). One vertical axis per
// hyperparameter and a last one for the primary metric; each trial a polyline through its values,
// coloured by its metric (the best drawn thick, trials with no metric grey and dashed). Numeric
// axes are linear; any axis with a non-number is categorical (values spread evenly). Every name
// and value reaches the DOM as text (createTextNode / textContent), never as markup.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, x, y, value, anchor) {
    var t = el("text", { x: x, y: y, "text-anchor": anchor || "middle" }, parent);
    t.textContent = value;
    return t;
  }

  function isNum(v) { return typeof v === "number" && isFinite(v); }

  // An axis: maps a value to 0..1 (0 at the bottom) and gives its tick labels.
  function axis(label, values) {
    var present = values.filter(function (v) { return v !== null && v !== undefined; });
    if (present.length && present.every(isNum)) {
      var lo = Math.min.apply(null, present), hi = Math.max.apply(null, present);
      var span = hi - lo || 1;
      return {
        label: label,
        pos: function (v) { return isNum(v) ? (v - lo) / span : null; },
        ticks: lo === hi ? [[0.5, String(lo)]] : [[0, String(+lo.toPrecision(4))], [1, String(+hi.toPrecision(4))]],
      };
    }
    var cats = [];
    present.forEach(function (v) { var s = String(v); if (cats.indexOf(s) < 0) cats.push(s); });
    cats.sort();
    var at = function (i) { return cats.length === 1 ? 0.5 : i / (cats.length - 1); };
    return {
      label: label,
      pos: function (v) { var i = cats.indexOf(String(v)); return v === null || v === undefined || i < 0 ? null : at(i); },
      ticks: cats.map(function (c, i) { return [at(i), c]; }),
    };
  }

  // Blue (worst) to orange (best) by the metric's rank.
  function colour(t) {
    var r = Math.round(11 + (213 - 11) * t), g = Math.round(92 + (66 - 92) * t), b = Math.round(213 + (11 - 213) * t);
    return "rgb(" + r + "," + g + "," + b + ")";
  }

  // data: {metric, goal, parameters: [...], trials: [{id, name, params, value}], best}
  function draw(fig, data) {
    var names = data.parameters.concat([data.metric]);
    var axes = names.map(function (n, i) {
      var last = i === names.length - 1;
      return axis(n, data.trials.map(function (t) { return last ? t.value : t.params[n]; }));
    });
    var W = Math.max(360, 150 * names.length), H = 300, top = 34, bottom = 30, left = 100, right = 60;
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img" });
    var title = el("title", {}, svg);
    title.textContent = "parallel coordinates of " + data.trials.length + " trials";
    var xOf = function (i) { return names.length === 1 ? W / 2 : left + i * (W - left - right) / (names.length - 1); };
    var yOf = function (p) { return top + (1 - p) * (H - top - bottom); };
    var scored = data.trials.filter(function (t) { return isNum(t.value); });
    var lines = el("g", {}, svg);
    // Worst first, best last: the best line is drawn on top.
    data.trials.slice().reverse().forEach(function (t) {
      var pts = [];
      axes.forEach(function (a, i) {
        var v = i === axes.length - 1 ? t.value : t.params[names[i]];
        var p = a.pos(v);
        if (p !== null) pts.push(xOf(i).toFixed(1) + "," + yOf(p).toFixed(1));
      });
      if (pts.length < 1) return;
      var rank = scored.indexOf(t);
      var cls = "trial" + (t.id === data.best ? " best" : "") + (isNum(t.value) ? "" : " unscored");
      var line = el("polyline", { points: pts.join(" "), "class": cls, "data-run": t.id }, lines);
      if (isNum(t.value) && t.id !== data.best) {
        line.setAttribute("stroke", colour(scored.length > 1 ? 1 - rank / (scored.length - 1) : 1));
      }
      var tip = el("title", {}, line);
      tip.textContent = t.name + ": " + data.metric + " = " + (isNum(t.value) ? t.value : "none");
    });
    axes.forEach(function (a, i) {
      var g = el("g", { "class": "axis" }, svg);
      var x = xOf(i);
      el("line", { x1: x, x2: x, y1: top, y2: H - bottom }, g);
      text(g, x, 14, a.label).setAttribute("class", "label");
      a.ticks.forEach(function (tk) {
        el("line", { x1: x - 4, x2: x + 4, y1: yOf(tk[0]), y2: yOf(tk[0]) }, g);
        // Long categories are cut on the axis; the table below has them whole.
        var label = tk[1].length > 14 ? tk[1].slice(0, 13) + "…" : tk[1];
        text(g, x - 6, yOf(tk[0]) + 4, label, "end");
      });
    });
    fig.appendChild(svg);
    return svg;
  }

  window.mlwsParcoords = draw;
})();
