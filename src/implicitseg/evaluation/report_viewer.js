// implicitseg report: an offline 3D view of predicted and ground-truth surfaces on a 2D canvas (no WebGL, no
// network). Each <canvas class="viewer" data-mesh="ID"> reads the JSON in <script id="ID">:
//   {"scale_mm": s, "surfaces": [{"name", "color", "vertices": [x, y, z, ...] (ints, × s mm, LPS, centred),
//                                 "faces": [a, b, c, ...]}]}
// Drag to rotate, wheel to zoom. Canvases are drawn when they scroll into view; after a drawing, the canvas's
// data-painted attribute holds how many of its pixels are painted (a test reads it).
(function () {
  "use strict";

  function parseColor(hex) {
    var value = parseInt(hex.slice(1), 16);
    return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
  }

  function Viewer(canvas) {
    var data = JSON.parse(document.getElementById(canvas.dataset.mesh).textContent);
    this.canvas = canvas;
    this.context = canvas.getContext("2d");
    this.surfaces = data.surfaces.map(function (surface) {
      var vertices = new Float32Array(surface.vertices.length);
      for (var i = 0; i < vertices.length; i++) vertices[i] = surface.vertices[i] * data.scale_mm;
      return {name: surface.name, rgb: parseColor(surface.color), vertices: vertices,
              faces: Uint32Array.from(surface.faces), visible: true};
    });
    var radius = 1e-6;
    this.surfaces.forEach(function (surface) {
      for (var i = 0; i < surface.vertices.length; i += 3) {
        var r = Math.hypot(surface.vertices[i], surface.vertices[i + 1], surface.vertices[i + 2]);
        if (r > radius) radius = r;
      }
    });
    this.radius = radius;
    this.yaw = 0.6;
    this.pitch = -0.4;
    this.zoom = 1.0;
    this.attach();
  }

  Viewer.prototype.rotation = function () {
    // rows: screen x (right), screen y (down), depth (away from the viewer). At yaw = pitch = 0 the patient faces
    // the viewer (anterior view): screen x = L (+x), screen y = inferior (-z), depth = posterior (+y); yaw turns
    // the world about z, pitch then tilts it about the screen's x axis
    var cy = Math.cos(this.yaw), sy = Math.sin(this.yaw), cp = Math.cos(this.pitch), sp = Math.sin(this.pitch);
    return [
      [cy, -sy, 0],
      [-sp * sy, -sp * cy, -cp],
      [cp * sy, cp * cy, -sp],
    ];
  };

  Viewer.prototype.draw = function () {
    var canvas = this.canvas, context = this.context, width = canvas.width, height = canvas.height;
    context.fillStyle = "#ffffff";
    context.fillRect(0, 0, width, height);
    var m = this.rotation();
    var scale = 0.45 * Math.min(width, height) / this.radius * this.zoom;
    var triangles = [];
    this.surfaces.forEach(function (surface) {
      if (!surface.visible) return;
      var v = surface.vertices, f = surface.faces, n = v.length / 3;
      var sx = new Float32Array(n), sy = new Float32Array(n), sz = new Float32Array(n);
      for (var i = 0; i < n; i++) {
        var x = v[3 * i], y = v[3 * i + 1], z = v[3 * i + 2];
        sx[i] = m[0][0] * x + m[0][1] * y + m[0][2] * z;
        sy[i] = m[1][0] * x + m[1][1] * y + m[1][2] * z;
        sz[i] = m[2][0] * x + m[2][1] * y + m[2][2] * z;
      }
      for (var t = 0; t < f.length; t += 3) {
        var a = f[t], b = f[t + 1], c = f[t + 2];
        var ux = sx[b] - sx[a], uy = sy[b] - sy[a], uz = sz[b] - sz[a];
        var wx = sx[c] - sx[a], wy = sy[c] - sy[a], wz = sz[c] - sz[a];
        var nx = uy * wz - uz * wy, ny = uz * wx - ux * wz, nz = ux * wy - uy * wx;
        var length = Math.hypot(nx, ny, nz) || 1;
        var light = 0.25 + 0.75 * Math.abs(nz / length);  // two-sided: open surfaces show both faces
        triangles.push({depth: sz[a] + sz[b] + sz[c], light: light, rgb: surface.rgb,
                        x: [sx[a], sx[b], sx[c]], y: [sy[a], sy[b], sy[c]]});
      }
    });
    triangles.sort(function (p, q) { return q.depth - p.depth; });  // far first
    var cx = width / 2, cy = height / 2;
    triangles.forEach(function (tri) {
      var r = Math.round(tri.rgb[0] * tri.light), g = Math.round(tri.rgb[1] * tri.light),
          b = Math.round(tri.rgb[2] * tri.light);
      context.fillStyle = context.strokeStyle = "rgb(" + r + "," + g + "," + b + ")";
      context.beginPath();
      context.moveTo(cx + scale * tri.x[0], cy + scale * tri.y[0]);
      context.lineTo(cx + scale * tri.x[1], cy + scale * tri.y[1]);
      context.lineTo(cx + scale * tri.x[2], cy + scale * tri.y[2]);
      context.closePath();
      context.fill();
      context.stroke();
    });
    var pixels = context.getImageData(0, 0, width, height).data, painted = 0;
    for (var p = 0; p < pixels.length; p += 4) {
      if (pixels[p] < 250 || pixels[p + 1] < 250 || pixels[p + 2] < 250) painted++;
    }
    canvas.dataset.painted = String(painted);
  };

  Viewer.prototype.attach = function () {
    var self = this, dragging = null;
    this.canvas.addEventListener("mousedown", function (event) { dragging = [event.clientX, event.clientY]; });
    window.addEventListener("mouseup", function () { dragging = null; });
    window.addEventListener("mousemove", function (event) {
      if (!dragging) return;
      self.yaw += (event.clientX - dragging[0]) * 0.01;
      self.pitch += (event.clientY - dragging[1]) * 0.01;
      dragging = [event.clientX, event.clientY];
      self.draw();
    });
    this.canvas.addEventListener("wheel", function (event) {
      event.preventDefault();
      self.zoom *= event.deltaY < 0 ? 1.1 : 1 / 1.1;
      self.draw();
    }, {passive: false});
    var toggles = document.querySelectorAll('input[data-toggle="' + this.canvas.dataset.mesh + '"]');
    toggles.forEach(function (box) {
      box.addEventListener("change", function () {
        self.surfaces.forEach(function (surface) {
          if (surface.name === box.value) surface.visible = box.checked;
        });
        self.draw();
      });
    });
  };

  function start() {
    var canvases = Array.prototype.slice.call(document.querySelectorAll("canvas.viewer"));
    function open(canvas) {
      if (!canvas.viewer) { canvas.viewer = new Viewer(canvas); canvas.viewer.draw(); }
    }
    if (canvases.length) open(canvases[0]);  // the first case at once; the others when they come into view
    if (!("IntersectionObserver" in window)) { canvases.forEach(open); return; }
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) { if (entry.isIntersecting) open(entry.target); });
    }, {rootMargin: "200px"});
    canvases.forEach(function (canvas) { observer.observe(canvas); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
