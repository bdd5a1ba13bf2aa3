// Track page: draws the waveform from waveform.json on the canvas, moves the playhead with
// the <audio> element, and seeks on click or arrow keys. No libraries: it must work offline.
(() => {
  "use strict";
  const player = document.getElementById("player");
  const audio = document.getElementById("audio");
  const canvas = document.getElementById("waveform");
  if (!player || !audio || !canvas) return;
  const ctx = canvas.getContext("2d");
  const style = getComputedStyle(document.documentElement);
  const colour = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  const WAVE = colour("--wave", "#8a94a6");
  const PLAYED = colour("--played", "#4f7cff");
  const HEAD = colour("--head", "#ff5d5d");
  let peaks = [];

  function duration() {
    return Number.isFinite(audio.duration) && audio.duration > 0
      ? audio.duration : Number(player.dataset.duration) || 0;
  }

  function resize() {
    const box = canvas.getBoundingClientRect();
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(box.width * ratio));
    canvas.height = Math.max(1, Math.round(box.height * ratio));
  }

  function draw() {
    const { width, height } = canvas;
    ctx.clearRect(0, 0, width, height);
    const total = duration();
    const playedX = total ? (audio.currentTime / total) * width : 0;
    const middle = height / 2;
    const step = peaks.length ? width / peaks.length : width;
    // scaled to the loudest peak (as players do), so a quiet track still has a shape
    const loudest = peaks.reduce((m, [low, high]) => Math.max(m, -low, high), 0);
    const scale = middle * 0.95 / Math.max(loudest, 0.05);
    peaks.forEach(([low, high], i) => {
      const x = i * step;
      // at least one pixel tall, so silence still shows where the track is
      const top = middle - Math.max(high, 0) * scale;
      const bottom = middle - Math.min(low, 0) * scale;
      ctx.fillStyle = x < playedX ? PLAYED : WAVE;
      ctx.fillRect(x, top, Math.max(1, step - 0.5), Math.max(1, bottom - top));
    });
    ctx.fillStyle = HEAD;
    ctx.fillRect(Math.min(playedX, width - 2), 0, 2, height);
  }

  function seekTo(fraction) {
    const total = duration();
    if (!total) return;
    audio.currentTime = Math.min(Math.max(fraction, 0), 1) * total;
    draw();
  }

  function animate() {
    draw();
    if (!audio.paused) requestAnimationFrame(animate);
  }

  canvas.addEventListener("click", (event) => {
    const box = canvas.getBoundingClientRect();
    seekTo((event.clientX - box.left) / box.width);
  });
  canvas.addEventListener("keydown", (event) => {
    const total = duration();
    if (!total) return;
    const delta = { ArrowLeft: -5, ArrowRight: 5 }[event.key];
    if (delta !== undefined) {
      event.preventDefault();
      seekTo((audio.currentTime + delta) / total);
    } else if (event.key === " ") {
      event.preventDefault();
      if (audio.paused) audio.play(); else audio.pause();
    }
  });
  for (const name of ["play", "seeked", "timeupdate", "loadedmetadata", "pause", "ended"]) {
    audio.addEventListener(name, name === "play" ? animate : draw);
  }
  window.addEventListener("resize", () => { resize(); draw(); });

  resize();
  draw();
  fetch(player.dataset.waveform)
    .then((response) => (response.ok ? response.json() : { peaks: [] }))
    .then((data) => { peaks = Array.isArray(data.peaks) ? data.peaks : []; })
    .catch(() => { peaks = []; })
    .finally(() => {
      draw();
      player.dataset.drawn = String(peaks.length);  // tests and curious people read this
    });
})();
