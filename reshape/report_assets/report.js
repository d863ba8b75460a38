// reshape report: draws the selection map, new images, provenance and DRCDown sections from the data
// files beside this script (data/summary.js, data/rows-NNNN.js). No network, no library: plain DOM.
(function () {
  "use strict";
  var S = window.RESHAPE_SUMMARY;
  var SVGNS = "http://www.w3.org/2000/svg";
  var rows = null, chunks = {}, waiting = [];
  var drawn = {};

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "text") node.textContent = attrs[k];
      else node.setAttribute(k, attrs[k]);
    }
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }
  function svg(tag, attrs) {
    var node = document.createElementNS(SVGNS, tag);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    return node;
  }
  // url:begin: tests run the code up to url:end alone
  // A thumbnail's relative URL: every path segment percent-encoded, so '#', '?', '%xx' and a folder
  // named '%2e%2e' name the file itself (not a fragment, a query, another file or the parent folder).
  function thumbUrl(path) {
    return String(path).split("/").map(encodeURIComponent).join("/");
  }
  // url:end
  function thumb(src, name) {
    if (!src) return el("span", {"class": "nothumb", text: "no image"});
    return el("img", {src: thumbUrl(src), alt: name, title: name, loading: "lazy"});
  }
  function fmt(v) { return v === null || v === undefined ? "–" : String(v); }
  function base(path) { return String(path).split("/").pop(); }

  // ---------------------------------------------------------------- data chunks (script tags: file:// safe)
  window.reshapeRows = function (index, chunk) {
    chunks[index] = chunk;
    if (Object.keys(chunks).length === S.chunks) {
      rows = [];
      for (var i = 0; i < S.chunks; i++) rows = rows.concat(chunks[i]);
      waiting.splice(0).forEach(function (cb) { cb(rows); });
    }
  };
  function withRows(cb) {
    if (rows) return cb(rows);
    if (S.chunks === 0) { rows = []; return cb(rows); }
    waiting.push(cb);
    if (waiting.length > 1) return;
    for (var i = 0; i < S.chunks; i++) {
      var name = "data/rows-" + String(i).padStart(4, "0") + ".js";
      document.body.appendChild(el("script", {src: name}));
    }
  }

  // ---------------------------------------------------------------- tabs
  function show(tab) {
    var sections = document.querySelectorAll("section.tab");
    if (!document.getElementById(tab)) tab = "overview";
    sections.forEach(function (s) { s.hidden = s.id !== tab; });
    document.querySelectorAll("nav a").forEach(function (a) {
      a.classList.toggle("active", a.getAttribute("data-tab") === tab);
    });
    if (!drawn[tab] && renderers[tab]) { drawn[tab] = true; renderers[tab](); }
  }
  window.addEventListener("hashchange", function () { show(location.hash.slice(1)); });

  // ---------------------------------------------------------------- selection map
  function drawSelection() {
    var body = document.getElementById("selection-body");
    if (!S.selection) {
      body.appendChild(el("p", {text: "This dataset was published without the selection artifacts " +
        "(features and selection), so there is no selection map."}));
      return;
    }
    var pts = S.selection.points, W = 640, H = 460, pad = 16;
    var xs = pts.map(function (p) { return p[3]; }), ys = pts.map(function (p) { return p[4]; });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    var sx = function (v) { return pad + (v - x0) / ((x1 - x0) || 1) * (W - 2 * pad); };
    var sy = function (v) { return H - pad - (v - y0) / ((y1 - y0) || 1) * (H - 2 * pad); };
    var map = svg("svg", {id: "selection-map", viewBox: "0 0 " + W + " " + H, role: "img"});
    var info = el("div", {id: "map-info", "class": "map-info"},
                  [el("p", {text: "Hover or click a point to see its image and name."})]);
    function describe(p) {
      info.textContent = "";
      info.appendChild(thumb(p[2], p[1]));
      info.appendChild(el("p", {"class": "map-name", text: p[1]}));
      var what = {train: "training reference", candidate: "candidate (not selected)",
                  selected: "selected new reference"}[p[0]];
      info.appendChild(el("p", {text: what + (p[5] !== null ? ", distance to nearest training ref " +
        fmt(p[5]) : "")}));
    }
    ["candidate", "train", "selected"].forEach(function (role) {
      pts.forEach(function (p) {
        if (p[0] !== role) return;
        var mark = role === "train"
          ? svg("rect", {x: sx(p[3]) - 5, y: sy(p[4]) - 5, width: 10, height: 10})
          : svg("circle", {cx: sx(p[3]), cy: sy(p[4]), r: role === "selected" ? 6 : 3});
        mark.setAttribute("class", "pt " + role);
        mark.setAttribute("data-name", p[1]);
        mark.setAttribute("tabindex", "0");
        var title = svg("title", {}); title.textContent = p[1]; mark.appendChild(title);
        mark.addEventListener("mouseenter", function () { describe(p); });
        mark.addEventListener("click", function () { describe(p); });
        mark.addEventListener("focus", function () { describe(p); });
        map.appendChild(mark);
      });
    });
    var legend = el("p", {"class": "legend"}, [
      el("span", {"class": "key train", text: "training refs"}),
      el("span", {"class": "key candidate", text: "candidates"}),
      el("span", {"class": "key selected", text: "selected"})]);
    body.appendChild(el("p", {text: "2-D PCA of the cosine-normalised features (as plots/selection_map.png)."}));
    body.appendChild(legend);
    body.appendChild(el("div", {"class": "map-wrap"}, [map, info]));
    body.appendChild(el("h3", {text: "Selected references (farthest from the training set first)"}));
    var strip = el("div", {id: "selected-strip", "class": "strip"});
    S.selection.strip.forEach(function (s) {
      strip.appendChild(el("figure", {"data-name": s[0]}, [thumb(s[1], s[0]),
        el("figcaption", {text: base(s[0]) + " · d = " + fmt(s[2])})]));
    });
    body.appendChild(strip);
  }

  // ---------------------------------------------------------------- new images
  function pager(total, size, draw) {
    var page = 0, pages = Math.max(1, Math.ceil(total / size));
    var label = el("span", {"class": "page"});
    var prev = el("button", {type: "button", text: "previous"});
    var next = el("button", {type: "button", text: "next"});
    function go(p) {
      page = Math.max(0, Math.min(pages - 1, p));
      label.textContent = " page " + (page + 1) + " of " + pages + " ";
      prev.disabled = page === 0; next.disabled = page === pages - 1;
      draw(page * size, Math.min(total, (page + 1) * size));
    }
    prev.addEventListener("click", function () { go(page - 1); });
    next.addEventListener("click", function () { go(page + 1); });
    var bar = el("div", {"class": "pager"}, [prev, label, next]);
    return {bar: bar, go: go};
  }

  function drawNew() {
    var body = document.getElementById("new-body");
    body.appendChild(el("p", {text: "Loading…", id: "new-loading"}));
    withRows(function (all) {
      body.textContent = "";
      var byRef = {};
      all.forEach(function (r) { (byRef[r[2]] = byRef[r[2]] || []).push(r); });
      var refs = S.refs, holder = el("div");
      var p = pager(refs.length, 10, function (a, b) {
        holder.textContent = "";
        refs.slice(a, b).forEach(function (ref) { holder.appendChild(refGrid(ref, byRef[ref] || [])); });
      });
      body.appendChild(p.bar); body.appendChild(holder); p.go(0);
    });
  }
  function refGrid(ref, items) {
    var cell = {};
    items.forEach(function (r) { cell[r[4] + "/" + r[5]] = r; });
    var head = el("tr", {}, [el("th", {text: "type \\ level"})].concat(S.levels.map(function (l) {
      return el("th", {text: String(l)}); })));
    var table = el("table", {"class": "grid"}, [head]);
    S.types.forEach(function (t) {
      var tr = el("tr", {}, [el("th", {text: String(t)})]);
      S.levels.forEach(function (l) {
        var r = cell[t + "/" + l];
        tr.appendChild(r ? el("td", {"data-img": r[0]}, [thumb(r[1], r[0]),
          el("div", {"class": "lab", text: fmt(r[6])})]) : el("td", {"class": "empty"}));
      });
      table.appendChild(tr);
    });
    var first = items[0];
    return el("div", {"class": "newref", "data-ref": ref}, [
      el("h3", {}, [first ? thumb(first[3], ref) : null, el("span", {text: " " + ref})]), table]);
  }

  // ---------------------------------------------------------------- provenance
  function options(select, values, all) {
    select.appendChild(el("option", {value: "", text: all}));
    values.forEach(function (v) { select.appendChild(el("option", {value: String(v), text: String(v)})); });
    return select;
  }
  function drawProvenance() {
    var body = document.getElementById("provenance-body");
    body.appendChild(el("p", {text: "Loading…"}));
    withRows(function (all) {
      body.textContent = "";
      var fRef = options(el("select", {id: "filter-ref", "aria-label": "reference"}), S.refs, "every reference");
      var fType = options(el("select", {id: "filter-type", "aria-label": "type"}), S.types, "every type");
      var fLevel = options(el("select", {id: "filter-level", "aria-label": "level"}), S.levels, "every level");
      var fText = el("input", {id: "filter-text", type: "search", placeholder: "image name contains…"});
      var size = el("select", {id: "page-size", "aria-label": "rows per page"});
      [50, 200, "all"].forEach(function (n) { size.appendChild(el("option", {value: String(n), text: n + " per page"})); });
      var count = el("p", {id: "row-count"});
      var table = el("table", {id: "provenance-table", "class": "prov"});
      var holder = el("div");
      body.appendChild(el("div", {"class": "filters"}, [fRef, fType, fLevel, fText, size]));
      body.appendChild(count); body.appendChild(holder);
      function update() {
        var ref = fRef.value, t = fType.value, l = fLevel.value, q = fText.value.toLowerCase();
        var hits = all.filter(function (r) {
          return (!ref || r[2] === ref) && (!t || String(r[4]) === t) && (!l || String(r[5]) === l) &&
            (!q || r[0].toLowerCase().indexOf(q) >= 0);
        });
        count.textContent = hits.length + " of " + all.length + " pseudo-labelled images";
        var n = size.value === "all" ? Math.max(1, hits.length) : Number(size.value);
        holder.textContent = "";
        var p = pager(hits.length, n, function (a, b) {
          table.textContent = "";
          table.appendChild(el("tr", {}, ["image", "reference", "type", "level", "label (var)",
            "neighbours: source image, its label, distance, weight"].map(function (h) {
              return el("th", {text: h}); })));
          hits.slice(a, b).forEach(function (r) { table.appendChild(provRow(r)); });
        });
        holder.appendChild(p.bar); holder.appendChild(table); p.go(0);
      }
      [fRef, fType, fLevel, size].forEach(function (s) { s.addEventListener("change", update); });
      fText.addEventListener("input", update);
      update();
    });
  }
  function provRow(r) {
    var nbs = el("div", {"class": "nbs"});
    r[8].forEach(function (n) {
      nbs.appendChild(el("figure", {"class": "nb", "data-neighbour": n[0]}, [thumb(n[1], n[0]),
        el("figcaption", {text: base(n[0]) + " · label " + fmt(n[2]) + " · d " + fmt(n[3]) +
          " · w " + fmt(n[4])})]));
    });
    return el("tr", {"class": "prow", "data-img": r[0]}, [
      el("td", {}, [thumb(r[1], r[0]), el("div", {"class": "name", text: base(r[0])})]),
      el("td", {text: base(r[2])}), el("td", {text: String(r[4])}), el("td", {text: String(r[5])}),
      el("td", {text: fmt(r[6]) + " (" + fmt(r[7]) + ")"}), el("td", {}, [nbs])]);
  }

  // ---------------------------------------------------------------- DRCDown clusters
  function drawClusters() {
    var body = document.getElementById("clusters-body"), list = S.clusters || [];
    body.appendChild(el("p", {text: list.length + " redundant clusters of more than one sample " +
      "(largest first); dropped members are the ones DRCDown removed."}));
    var holder = el("div");
    var p = pager(list.length, 20, function (a, b) {
      holder.textContent = "";
      list.slice(a, b).forEach(function (c) {
        var kept = el("div", {"class": "strip kept"}), dropped = el("div", {"class": "strip dropped"});
        c[2].forEach(function (m) {
          (m[2] ? kept : dropped).appendChild(el("figure", {"data-name": m[1]}, [thumb(m[0], m[1]),
            el("figcaption", {text: base(m[1])})]));
        });
        holder.appendChild(el("div", {"class": "cluster", "data-cluster": String(c[0])}, [
          el("h3", {text: "cluster " + c[0] + " · " + c[1] + " samples"}),
          el("p", {text: "kept"}), kept, el("p", {text: "dropped"}), dropped]));
      });
    });
    body.appendChild(p.bar); body.appendChild(holder); p.go(0);
  }

  var renderers = {selection: drawSelection, "new": drawNew, provenance: drawProvenance,
                   clusters: drawClusters};
  document.querySelectorAll("nav a").forEach(function (a) {
    a.addEventListener("click", function () { show(a.getAttribute("data-tab")); });
  });
  show(location.hash.slice(1) || "overview");
})();
