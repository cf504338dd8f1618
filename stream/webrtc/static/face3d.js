// Small 3D view of a tracked face in plain WebGL: the dense mesh from GET /face-model, rebuilt each frame from the
// 3DMM parameters of a "faces" message (shape + expression) and its extended expression ("ext": closed eyes, mouth
// corners, jaw), turned by the message's pose, lit from the front.
//
//   const view = Face3D.create(canvas);  await view.load("/face-model?token=T");
//   view.update(face.params, face.ext);  // 62 numbers, {name: value} or null
//   view.updateFromBlendshapes(face.params, face.blendshapes);  // the same face driven by its ARKit blendshapes
//                                        // alone (the server's rig, face-model header "arkit_rig"): an avatar
//   view.framesDrawn, view.loaded
(() => {
  "use strict";

  const VS = `attribute vec3 pos; attribute vec3 nrm; uniform float aspect; varying vec3 vn;
    void main() { vn = nrm; gl_Position = vec4(pos.x / aspect, pos.y, -pos.z * 0.5, 1.0); }`;
  const FS = `precision mediump float; varying vec3 vn;
    void main() { vec3 n = normalize(vn); float l = 0.25 + 0.75 * abs(dot(n, normalize(vec3(0.3, 0.4, 1.0))));
      gl_FragColor = vec4(vec3(0.93, 0.74, 0.62) * l, 1.0); }`;

  function compile(gl, type, src) {
    const s = gl.createShader(type);
    gl.shaderSource(s, src);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    return s;
  }

  function create(canvas) {
    const gl = canvas.getContext("webgl", { antialias: true, preserveDrawingBuffer: true });
    const view = { loaded: false, framesDrawn: 0, error: null, gl };
    if (!gl) { view.error = "WebGL unavailable"; view.update = () => {}; view.load = async () => {}; return view; }
    const prog = gl.createProgram();
    gl.attachShader(prog, compile(gl, gl.VERTEX_SHADER, VS));
    gl.attachShader(prog, compile(gl, gl.FRAGMENT_SHADER, FS));
    gl.linkProgram(prog);
    const posLoc = gl.getAttribLocation(prog, "pos"), nrmLoc = gl.getAttribLocation(prog, "nrm");
    const aspectLoc = gl.getUniformLocation(prog, "aspect");
    const posBuf = gl.createBuffer(), nrmBuf = gl.createBuffer(), idxBuf = gl.createBuffer();
    let mean, basis, tri, nV, nK, nT, verts, normals, uintIndex;
    let extBasis = null, extNames = [];  // (V*3, E) row-major, the names of its columns (server's EXT_NAMES)
    let rig = null, rigNames = [];  // (E, 52) ext per ARKit blendshape, the names of its columns

    view.load = async (url) => {
      const resp = await fetch(url);
      if (!resp.ok) throw Object.assign(new Error(`face model: HTTP ${resp.status}`), { status: resp.status });
      const buf = await resp.arrayBuffer();
      const n = new DataView(buf).getUint32(0, true);
      const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
      const base = 4 + n, a = head.arrays;
      mean = new Float32Array(buf, base + a.mean.offset, a.mean.bytes / 4);
      basis = new Float32Array(buf, base + a.basis.offset, a.basis.bytes / 4);
      tri = new Uint32Array(buf, base + a.triangles.offset, a.triangles.bytes / 4);
      nV = head.vertices; nK = head.coefficients; nT = head.triangles;
      if (a.ext_basis && Array.isArray(head.ext_names)) {
        extBasis = new Float32Array(buf, base + a.ext_basis.offset, a.ext_basis.bytes / 4);
        extNames = head.ext_names;
        if (Array.isArray(head.arkit_rig) && Array.isArray(head.blendshape_names)) {
          rig = head.arkit_rig; rigNames = head.blendshape_names;
        }
      }
      verts = new Float32Array(nV * 3); normals = new Float32Array(nV * 3);
      uintIndex = nV > 65535;
      if (uintIndex && !gl.getExtension("OES_element_index_uint")) throw new Error("32-bit indices unsupported");
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, idxBuf);
      gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, uintIndex ? tri : Uint16Array.from(tri), gl.STATIC_DRAW);
      view.loaded = true;
      view.vertices = nV;
    };

    // params: 62 real 3DMM parameters: P (3x4 row-major) | 40 shape | 10 expression; ext: {name: value} or null
    view.update = (params, ext) => {
      if (!view.loaded || !params || params.length < 12 + nK) return;
      const c = params.slice(12, 12 + nK);
      const P = params;
      const nE = extBasis && ext ? extNames.length : 0;
      const e = extNames.map((name) => (ext && Number.isFinite(ext[name]) ? ext[name] : 0));
      let cx = 0, cy = 0, cz = 0;
      for (let i = 0; i < nV * 3; i += 3) {
        const x = [0, 0, 0];
        for (let j = 0; j < 3; j++) {
          let s = mean[i + j];
          const row = (i + j) * nK;
          for (let k = 0; k < nK; k++) s += basis[row + k] * c[k];
          const rowE = (i + j) * nE;
          for (let k = 0; k < nE; k++) s += extBasis[rowE + k] * e[k];
          x[j] = s;
        }
        // rotation and scale of the pose (crop coordinates, y up): the view turns with the head
        for (let r = 0; r < 3; r++) verts[i + r] = P[4 * r] * x[0] + P[4 * r + 1] * x[1] + P[4 * r + 2] * x[2];
        cx += verts[i]; cy += verts[i + 1]; cz += verts[i + 2];
      }
      cx /= nV; cy /= nV; cz /= nV;
      let extent = 1e-9;
      for (let i = 0; i < nV * 3; i += 3) {
        verts[i] -= cx; verts[i + 1] -= cy; verts[i + 2] -= cz;
        extent = Math.max(extent, Math.abs(verts[i]), Math.abs(verts[i + 1]));
      }
      const s = 0.9 / extent;
      for (let i = 0; i < nV * 3; i++) verts[i] *= s;
      normals.fill(0);
      for (let t = 0; t < nT * 3; t += 3) {
        const a = tri[t] * 3, b = tri[t + 1] * 3, d = tri[t + 2] * 3;
        const ux = verts[b] - verts[a], uy = verts[b + 1] - verts[a + 1], uz = verts[b + 2] - verts[a + 2];
        const vx = verts[d] - verts[a], vy = verts[d + 1] - verts[a + 1], vz = verts[d + 2] - verts[a + 2];
        const nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
        for (const k of [a, b, d]) { normals[k] += nx; normals[k + 1] += ny; normals[k + 2] += nz; }
      }
      draw();
    };

    // the extended expression that shows ARKit blendshapes {name: value} on the mesh (the server's rig)
    view.extFromBlendshapes = (blendshapes) => {
      if (!rig || !blendshapes) return null;
      const ext = {};
      extNames.forEach((name, i) => {
        let s = 0;
        rigNames.forEach((b, j) => { const v = blendshapes[b]; if (Number.isFinite(v)) s += rig[i][j] * v; });
        ext[name] = s;
      });
      return ext;
    };

    // the face's identity and pose with its expression replaced by its blendshapes through the rig
    view.updateFromBlendshapes = (params, blendshapes) => {
      if (!params) return;
      const p = Array.from(params);
      for (let k = 52; k < 62 && k < p.length; k++) p[k] = 0;
      view.update(p, view.extFromBlendshapes(blendshapes));
    };

    function draw() {
      gl.viewport(0, 0, canvas.width, canvas.height);
      gl.clearColor(0.1, 0.1, 0.12, 1);
      gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
      gl.enable(gl.DEPTH_TEST);
      gl.useProgram(prog);
      gl.uniform1f(aspectLoc, canvas.width / canvas.height);
      gl.bindBuffer(gl.ARRAY_BUFFER, posBuf);
      gl.bufferData(gl.ARRAY_BUFFER, verts, gl.DYNAMIC_DRAW);
      gl.enableVertexAttribArray(posLoc);
      gl.vertexAttribPointer(posLoc, 3, gl.FLOAT, false, 0, 0);
      gl.bindBuffer(gl.ARRAY_BUFFER, nrmBuf);
      gl.bufferData(gl.ARRAY_BUFFER, normals, gl.DYNAMIC_DRAW);
      gl.enableVertexAttribArray(nrmLoc);
      gl.vertexAttribPointer(nrmLoc, 3, gl.FLOAT, false, 0, 0);
      gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, idxBuf);
      gl.drawElements(gl.TRIANGLES, nT * 3, uintIndex ? gl.UNSIGNED_INT : gl.UNSIGNED_SHORT, 0);
      view.framesDrawn++;
    }
    return view;
  }

  window.Face3D = { create };
})();
