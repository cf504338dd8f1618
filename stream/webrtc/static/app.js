// DAMDNet live page: camera -> WebRTC -> server processing -> WebRTC -> <video id="out">.
//
// URL parameters: ?token=T (required when the server has one), &probe=1 (latency probe, below),
// &autostart=1 (start without the button).
//
// For tests and measurements the page exposes:
//   window.framesReceived   frames presented by <video id="out"> (requestVideoFrameCallback)
//   window.stats            the last stats message from the server (data channel "control")
//   window.latency          {samples: [[page ms, loop ms], ...], last, p50, p95} from the probe (probe=1 only)
//   window.rttMs            data-channel round trip (ping/pong), ms
//   window.appState, window.peerId, window.lastError
//   window.app              {start, stop, sendControls}
//   window.faceData         face data channel ("faces"): {messages, parseErrors, last, recent: [{seq, time, probe,
//                           faces}], presentedProbes: probe values of presented frames (probe=1), viewFrames}
//
// Face data: the page opens a second data channel, "faces" (unordered, no retransmits), and the server sends one
// JSON message per processed frame (docs/INTERFACES.md); the first face's 3DMM parameters drive the 3D view
// (face3d.js, the mesh from GET /face-model), or with "3D view from blendshapes" (or ?view=blendshapes) its ARKit
// blendshapes alone, through the server's rig (an avatar's view of the stream).
//
// Latency probe (see stream/webrtc/probe.py, same layout): with probe=1 the page draws each camera frame into
// a canvas, paints 32 black/white cells along the bottom that encode performance.now() (ms, 24 bits + 6-bit
// check) and sends the canvas instead of the raw camera. The server copies that strip onto the processed
// frame; the page decodes it from every frame <video id="out"> presents, so
//   loop latency = presentation time of the returned frame - time the page drew the sent frame,
// browser send -> browser receive, measured with one clock.
(() => {
  "use strict";

  const CELLS = 32, DATA_BITS = 24, CHECK_BITS = 6, STRIP_DIVISOR = 20, MIN_STRIP_ROWS = 8;
  const MASK = 0xFFFFFF, MAX_SAMPLES = 20000;

  const params = new URLSearchParams(location.search);
  const token = params.get("token") || "";
  const probe = params.get("probe") === "1";

  const $ = (id) => document.getElementById(id);
  const outVideo = $("out"), localVideo = $("local");

  window.framesReceived = 0;
  window.stats = null;
  window.latency = { samples: [], receiveSamples: [], last: null, p50: null, p95: null, misreads: 0 };
  window.rttMs = null;
  window.appState = "idle";
  window.peerId = null;
  window.lastError = null;
  window.faceData = { messages: 0, parseErrors: 0, last: null, recent: [], presentedProbes: [], viewFrames: 0 };
  const view3d = window.Face3D ? window.Face3D.create($("face3d")) : null;
  let modelLoading = null;

  let pc = null, channel = null, camStream = null, pingTimer = null, probeTrack = null, running = false;

  function setState(s) {
    window.appState = s;
    const el = $("state");
    el.textContent = s;
    el.className = "state " + s.split(" ")[0];
  }

  function showError(msg) {
    window.lastError = msg;
    const el = $("error");
    el.textContent = msg;
    el.hidden = !msg;
  }

  // ---- probe ---------------------------------------------------------------------------------------
  function stripRows(h) { return Math.min(h, Math.max(MIN_STRIP_ROWS, Math.ceil(h / STRIP_DIVISOR))); }
  function check(v) { return (((v >> 16) & 0xFF) + ((v >> 8) & 0xFF) + (v & 0xFF) + 0x15) & ((1 << CHECK_BITS) - 1); }

  function paintProbe(ctx, w, h, value) {
    const rows = stripRows(h), c = check(value);
    const bits = [1, 0];
    for (let i = DATA_BITS - 1; i >= 0; i--) bits.push((value >> i) & 1);
    for (let i = CHECK_BITS - 1; i >= 0; i--) bits.push((c >> i) & 1);
    for (let i = 0; i < CELLS; i++) {
      const x0 = Math.floor(i * w / CELLS), x1 = Math.floor((i + 1) * w / CELLS);
      ctx.fillStyle = bits[i] ? "#fff" : "#000";
      ctx.fillRect(x0, h - rows, x1 - x0, rows);
    }
  }

  function decodeProbe(data, w, rows) {
    // data: RGBA of the bottom `rows` rows, width w
    const bits = [];
    const y0 = Math.floor(rows / 4), y1 = Math.max(y0 + 1, rows - Math.floor(rows / 4));
    for (let i = 0; i < CELLS; i++) {
      const x0 = Math.floor(i * w / CELLS), x1 = Math.floor((i + 1) * w / CELLS), cw = x1 - x0;
      let sum = 0, n = 0;
      for (let y = y0; y < y1; y++) {
        for (let x = x0 + Math.floor(cw / 4); x < x1 - Math.floor(cw / 4); x++) {
          const k = (y * w + x) * 4;
          sum += data[k] + data[k + 1] + data[k + 2];
          n += 3;
        }
      }
      bits.push(n && sum / n > 127.5 ? 1 : 0);
    }
    if (bits[0] !== 1 || bits[1] !== 0) return null;
    let v = 0, c = 0;
    for (let i = 0; i < DATA_BITS; i++) v = (v * 2) + bits[2 + i];
    for (let i = 0; i < CHECK_BITS; i++) c = (c * 2) + bits[2 + DATA_BITS + i];
    return c === check(v) ? v : null;
  }

  async function makeProbeTrack(video) {
    const canvas = $("probe-canvas");
    const ctx = canvas.getContext("2d");
    if (!video.videoWidth) await new Promise((r) => video.addEventListener("loadedmetadata", r, { once: true }));
    const stream = canvas.captureStream(0);
    const track = stream.getVideoTracks()[0];
    const draw = () => {
      if (!running) return;
      const w = video.videoWidth, h = video.videoHeight;
      if (w && h) {
        if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
        ctx.drawImage(video, 0, 0, w, h);
        paintProbe(ctx, w, h, Math.round(performance.now()) & MASK);
        track.requestFrame();
      }
      video.requestVideoFrameCallback(draw);
    };
    video.requestVideoFrameCallback(draw);
    return track;
  }

  const readCanvas = document.createElement("canvas");
  const readCtx = readCanvas.getContext("2d", { willReadFrequently: true });

  function readLatency(nowMs, meta) {
    const w = outVideo.videoWidth, h = outVideo.videoHeight;
    if (!w || !h) return;
    const rows = stripRows(h);
    if (readCanvas.width !== w || readCanvas.height !== rows) { readCanvas.width = w; readCanvas.height = rows; }
    readCtx.drawImage(outVideo, 0, h - rows, w, rows, 0, 0, w, rows);
    const value = decodeProbe(readCtx.getImageData(0, 0, w, rows).data, w, rows);
    const L = window.latency;
    if (value === null) { L.misreads++; return; }
    const shown = (meta && meta.presentationTime) || nowMs;
    const lat = ((Math.round(shown) & MASK) - value + MASK + 1) % (MASK + 1);
    if (lat > 60000) { L.misreads++; return; }
    L.samples.push([Math.round(performance.now()), lat]);
    window.faceData.presentedProbes.push(value);
    if (window.faceData.presentedProbes.length > MAX_SAMPLES) window.faceData.presentedProbes.shift();
    if (meta && meta.receiveTime) {
      L.receiveSamples.push([Math.round(performance.now()), ((Math.round(meta.receiveTime) & MASK) - value + MASK + 1) % (MASK + 1)]);
      if (L.receiveSamples.length > MAX_SAMPLES) L.receiveSamples.shift();
    }
    if (L.samples.length > MAX_SAMPLES) L.samples.shift();
    L.last = lat;
  }

  function summariseLatency() {
    const L = window.latency;
    const recent = L.samples.slice(-150).map((s) => s[1]).sort((a, b) => a - b);
    if (!recent.length) return;
    const q = (p) => recent[Math.min(recent.length - 1, Math.floor(p * recent.length))];
    L.p50 = q(0.5); L.p95 = q(0.95);
  }

  function onOutFrame(now, meta) {
    window.framesReceived++;
    if (probe) readLatency(now, meta);
    if (running) outVideo.requestVideoFrameCallback(onOutFrame);
  }

  // ---- control channel ------------------------------------------------------------------------------
  function send(obj) {
    if (channel && channel.readyState === "open") channel.send(JSON.stringify(obj));
  }

  function sendControls() {
    send({ type: "controls", mode: $("mode").value, smooth: $("smooth").checked });
  }

  function onMessage(ev) {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    if (msg.type === "stats") {
      window.stats = msg;
      summariseLatency();
      renderStats(msg);
    } else if (msg.type === "pong") {
      window.rttMs = performance.now() - msg.t;
    } else if (msg.type === "hello") {
      // the server's controls win at connect (e.g. swap mode when it was started with a swap source)
      window.peerId = msg.peer_id;
      if (msg.controls) {
        if (msg.controls.mode) $("mode").value = msg.controls.mode;
        if (typeof msg.controls.smooth === "boolean") $("smooth").checked = msg.controls.smooth;
      }
    } else if (msg.type === "error") {
      showError("server: " + msg.message);
    }
  }

  function onFaces(ev) {
    const F = window.faceData;
    let msg;
    try {
      msg = JSON.parse(ev.data);
      if (msg.type !== "faces" || !Array.isArray(msg.faces)) throw new Error("not a faces message");
    } catch (e) { F.parseErrors++; return; }
    F.messages++;
    F.last = msg;
    F.recent.push({ seq: msg.seq, time: msg.time, probe: msg.probe, faces: msg.faces });
    if (F.recent.length > 300) F.recent.shift();
    const face = msg.faces[0];
    $("face-info").textContent = face
      ? `#${face.id} yaw ${face.yaw.toFixed(0)} pitch ${face.pitch.toFixed(0)} roll ${face.roll.toFixed(0)}` : "no face";
    if (face && view3d && view3d.loaded) {
      pendingParams = face.params;  // drawn on the next animation frame, at most VIEW_FPS times a second
      pendingExt = face.ext || null;
      pendingBlend = face.blendshapes || null;
      if (!viewScheduled) { viewScheduled = true; requestAnimationFrame(drawView); }
    }
  }

  const VIEW_FPS = 15;
  let pendingParams = null, pendingExt = null, pendingBlend = null, viewScheduled = false, lastViewMs = 0;
  const viewBlend = $("view-blend");
  if (viewBlend && new URLSearchParams(location.search).get("view") === "blendshapes") viewBlend.checked = true;
  function drawView(now) {
    if (now - lastViewMs < 1000 / VIEW_FPS - 2) { requestAnimationFrame(drawView); return; }
    viewScheduled = false;
    lastViewMs = now;
    if (pendingParams) {
      if (viewBlend && viewBlend.checked && pendingBlend) view3d.updateFromBlendshapes(pendingParams, pendingBlend);
      else view3d.update(pendingParams, pendingExt);
      pendingParams = null;
    }
    window.faceData.viewFrames = view3d.framesDrawn;
  }

  function openFaceChannel(conn) {
    const ch = conn.createDataChannel("faces", { ordered: false, maxRetransmits: 0 });
    ch.onmessage = onFaces;
    if (view3d && !view3d.error && !modelLoading) {
      modelLoading = view3d.load(`/face-model?token=${encodeURIComponent(token)}`)
        .catch((e) => {  // a server without a face model (a test processor): no 3D view, not an error
          if (e.status === 404) $("face-info").textContent = "(this server sends no face model)";
          else { modelLoading = null; showError(String(e.message || e)); }
        });
    }
    return ch;
  }

  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(1);
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  function renderStats(s) {
    const lat = s.latency_ms || {};
    const p = (x) => (x ? `${fmt(x.p50)} / ${fmt(x.p95)} ms` : "–");
    const rows = [
      ["fps in / out", `${fmt(s.fps_in)} / ${fmt(s.fps_out)}`],
      ["faces", fmt(s.faces)],
      ["server latency p50 / p95", p(lat.server)],
      ["processor p50 / p95", p(lat.process)],
      ["queue wait p50 / p95", p(lat.queue_wait)],
      ["loop latency (probe) p50 / p95", probe ? `${fmt(window.latency.p50)} / ${fmt(window.latency.p95)} ms` : "add &probe=1 to the URL"],
      ["data channel RTT", window.rttMs === null ? "–" : `${fmt(window.rttMs)} ms`],
      ["drops in / out", `${fmt(s.drops_in)} / ${fmt(s.drops_out)}`],
      ["frames in / out / received", `${fmt(s.frames_in)} / ${fmt(s.frames_out)} / ${window.framesReceived}`],
      ["frame size", `${fmt(s.frame_size)}${s.downscaled ? " (downscaled from " + fmt(s.source_size) + ")" : ""}`],
      ["errors", s.errors ? `${s.errors}: ${s.last_error}` : "0"],
      ["face data sent / dropped (received)", s.face_data ? `${fmt(s.face_data.sent)} / ${fmt(s.face_data.dropped)} (${window.faceData.messages})` : "–"],
      ["mode", `${s.controls && s.controls.mode} (smoothing ${s.controls && s.controls.smooth ? "on" : "off"})`],
    ];
    const proc = s.processor && s.processor.latency_ms;
    if (proc && typeof proc === "object") {
      for (const [k, v] of Object.entries(proc)) rows.push([`stage ${k}`, v && typeof v === "object" ? p(v) : fmt(v)]);
    }
    const tb = $("stats-table").tBodies[0];
    tb.replaceChildren(...rows.map(([k, v]) => {
      const tr = document.createElement("tr");
      const a = document.createElement("td"), b = document.createElement("td");
      a.textContent = k; b.textContent = v;
      tr.append(a, b);
      return tr;
    }));
    $("stats-raw").textContent = JSON.stringify(s, null, 1);
  }

  // ---- connection -----------------------------------------------------------------------------------
  function waitIceGathering(conn, timeoutMs) {
    if (conn.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { conn.removeEventListener("icegatheringstatechange", check); resolve(); };
      const check = () => { if (conn.iceGatheringState === "complete") done(); };
      conn.addEventListener("icegatheringstatechange", check);
      setTimeout(done, timeoutMs);
    });
  }

  async function start() {
    if (running) return;
    running = true;
    showError("");
    $("start").disabled = true;
    $("stop").disabled = false;
    try {
      setState("camera");
      camStream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } }, audio: false });
      localVideo.srcObject = camStream;
      await localVideo.play().catch(() => {});
      const sendTrack = probe ? (probeTrack = await makeProbeTrack(localVideo)) : camStream.getVideoTracks()[0];

      setState("connecting");
      pc = new RTCPeerConnection({ iceServers: [] });
      channel = pc.createDataChannel("control");
      openFaceChannel(pc);
      channel.onopen = () => {
        pingTimer = setInterval(() => send({ type: "ping", t: performance.now() }), 1000);
      };
      channel.onmessage = onMessage;
      pc.ontrack = (ev) => {
        outVideo.srcObject = ev.streams[0] || new MediaStream([ev.track]);
        outVideo.play().catch(() => {});
        outVideo.requestVideoFrameCallback(onOutFrame);
      };
      pc.onconnectionstatechange = () => {
        const s = pc ? pc.connectionState : "closed";
        setState(s);
        if (s === "failed") showError("connection failed: is the server reachable from this browser (UDP)?");
      };
      const transceiver = pc.addTransceiver(sendTrack, { direction: "sendrecv" });
      try {  // keep the resolution (the probe strip and face boxes need it); drop frames instead
        const prm = transceiver.sender.getParameters();
        prm.degradationPreference = "maintain-resolution";
        await transceiver.sender.setParameters(prm);
      } catch (e) { /* optional */ }

      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      await waitIceGathering(pc, 5000);
      const resp = await fetch("/offer", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type, token, probe }),
      });
      let answer;
      try { answer = await resp.json(); } catch (e) { answer = { error: `HTTP ${resp.status}` }; }
      if (!resp.ok) throw new Error(answer.error || `HTTP ${resp.status}`);
      window.peerId = answer.peer_id;
      await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    } catch (e) {
      setState("error");
      showError(String(e && e.message ? e.message : e));
      await stop(true);
    }
  }

  async function stop(keepError) {
    running = false;
    if (pingTimer) clearInterval(pingTimer);
    pingTimer = null;
    if (pc) { try { pc.close(); } catch (e) { /* closed */ } }
    pc = null;
    channel = null;
    if (probeTrack) probeTrack.stop();
    probeTrack = null;
    if (camStream) camStream.getTracks().forEach((t) => t.stop());
    camStream = null;
    $("start").disabled = false;
    $("stop").disabled = true;
    if (keepError !== true) setState("idle");
  }

  async function uploadSwap(file) {
    const status = $("swap-status");
    if (!window.peerId) { status.textContent = "start the camera first"; return; }
    status.textContent = "uploading…";
    const body = new FormData();
    body.append("image", file);
    const resp = await fetch(`/swap-source?peer=${encodeURIComponent(window.peerId)}`, {
      method: "POST", headers: { "X-Token": token }, body });
    let res;
    try { res = await resp.json(); } catch (e) { res = { error: `HTTP ${resp.status}` }; }
    status.textContent = resp.ok ? `swap source ${res.width}x${res.height} set` : `refused: ${res.error}`;
    if (resp.ok && $("mode").value !== "swap") { $("mode").value = "swap"; sendControls(); }
  }

  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", () => stop());
  $("mode").addEventListener("change", sendControls);
  $("smooth").addEventListener("change", sendControls);
  $("swap").addEventListener("change", (ev) => { if (ev.target.files[0]) uploadSwap(ev.target.files[0]); });
  window.addEventListener("pagehide", () => { if (pc) pc.close(); });

  window.app = { start, stop, sendControls };
  if (params.get("autostart") === "1") start();
})();
