/*
 * jsPsych 8 plugin: one ClickMe trial (SPEC.md 5.1).
 *
 * The participant sees a drawing and its category, presses Start, then paints over the parts that matter
 * with the mouse (or a finger). The brush is sampled every `sample_interval_ms`; when the cursor moved
 * further than half a brush since the last point, points are interpolated along the way so the painted
 * path has no gaps. Every `points_per_query` points the painted points go to the AI partner
 * (`ask_partner`), which sees only the painted squares and answers a category, or null for "nothing yet"
 * (shown as such, never correct). The trial ends when the partner names the right
 * category (score = 100 x the fraction of the time left when those points were sent), when time runs out
 * (score 0) or on Skip (score 0). Then `save` stores the trial (it retries with the same trial id until the
 * server acknowledges), and the trial's data are returned to jsPsych.
 *
 * Every text from data (category, partner's guess) is shown with textContent, never as HTML.
 */
var jsPsychClickMe = (function (jspsych) {
  "use strict";

  const P = jspsych.ParameterType;
  const info = {
    name: "clickme",
    version: "0.1.0",
    parameters: {
      /** URL of the drawing (white on black, canvas_size x canvas_size). */
      image_url: { type: P.STRING, default: undefined },
      /** The drawing's category, shown to the participant. */
      category: { type: P.STRING, default: undefined },
      stimulus_id: { type: P.STRING, default: undefined },
      /** Place of this trial in the participant's sequence (practice and main trials count separately). */
      position: { type: P.INT, default: 0 },
      practice: { type: P.BOOL, default: false },
      canvas_size: { type: P.INT, default: 256 },
      brush_px: { type: P.INT, default: 14 },
      time_limit_s: { type: P.FLOAT, default: 7 },
      sample_interval_ms: { type: P.INT, default: 10 },
      points_per_query: { type: P.INT, default: 10 },
      max_points_per_trial: { type: P.INT, default: 3000 },
      /** (points, trial_id) => Promise of {guess (null: "nothing yet"), correct} or null (no answer this time). */
      ask_partner: { type: P.FUNCTION, default: undefined },
      /** (data, onStatus) => Promise resolved once the server stored the trial. */
      save: { type: P.FUNCTION, default: undefined },
      /** Total score so far and a progress label, shown above the drawing. */
      score_total: { type: P.FLOAT, default: 0 },
      progress_label: { type: P.STRING, default: "" },
    },
    data: {
      trial_id: { type: P.STRING },
      stimulus_id: { type: P.STRING },
      category: { type: P.STRING },
      position: { type: P.INT },
      practice: { type: P.BOOL },
      points: { type: P.COMPLEX },
      partner: { type: P.COMPLEX },
      outcome: { type: P.STRING },
      score: { type: P.FLOAT },
      duration_ms: { type: P.INT },
    },
  };

  function uuid4() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    const b = window.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error(`could not load ${url}`));
      img.src = url;
    });
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  class ClickMePlugin {
    constructor(jsPsych) {
      this.jsPsych = jsPsych;
    }

    async trial(display_element, trial) {
      const size = trial.canvas_size;
      const limitMs = Math.round(trial.time_limit_s * 1000);
      const trialId = uuid4();

      // ---- layout (all text through textContent)
      const root = el("div", "clickme");
      const header = el("div", "clickme-header");
      header.append(el("span", "clickme-progress", trial.progress_label));
      const catLine = el("span", "", "Category: ");
      catLine.append(el("span", "clickme-category", trial.category));
      header.append(catLine);
      const scoreEl = el("span", "clickme-score", `Score: ${Math.round(trial.score_total)}`);
      header.append(scoreEl);
      const canvas = el("canvas", "clickme-canvas");
      canvas.width = size;
      canvas.height = size;
      canvas.style.width = `${size}px`;
      canvas.style.height = `${size}px`;
      const timer = el("div", "clickme-timer");
      const timerFill = el("div", "clickme-timer-fill");
      timer.append(timerFill);
      const timeText = el("div", "clickme-time", `${trial.time_limit_s.toFixed(1)} s`);
      const partnerEl = el("div", "clickme-partner", "Your partner is waiting for you to paint.");
      const buttons = el("div", "clickme-buttons");
      const startBtn = el("button", "jspsych-btn clickme-start", "Start");
      const skipBtn = el("button", "jspsych-btn clickme-skip", "Skip this drawing");
      skipBtn.disabled = true;
      buttons.append(startBtn, skipBtn);
      const statusEl = el("div", "clickme-status", "");
      root.append(header, canvas, timer, timeText, partnerEl, buttons, statusEl);
      display_element.replaceChildren(root);

      const ctx = canvas.getContext("2d");
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, size, size);
      let img;
      try {
        img = await loadImage(trial.image_url);
      } catch (err) {
        statusEl.textContent = "The drawing could not be loaded; please reload the page.";
        throw err;
      }
      statusEl.textContent = "Press Start, then paint over the parts of the drawing that matter.";
      await new Promise((resolve) => startBtn.addEventListener("click", resolve, { once: true }));
      startBtn.disabled = true;
      skipBtn.disabled = false;
      statusEl.textContent = "";
      ctx.drawImage(img, 0, 0, size, size);

      // ---- painting state
      const points = []; // [x, y, t]
      const answers = []; // {n_points, t, guess (null: "nothing yet"), correct[, proof]}
      let cursor = null;
      let painting = false;
      let queried = 0; // points already sent to the partner
      let inFlight = false;
      let finished = null; // {outcome, score, t}
      const t0 = performance.now();
      const now = () => Math.round(performance.now() - t0);
      const clamp = (v) => Math.min(size - 1, Math.max(0, Math.round(v)));

      let resolveDone;
      const done = new Promise((r) => (resolveDone = r));
      const finish = (outcome, score) => {
        if (finished) return;
        finished = { outcome, score, t: now() };
        resolveDone();
      };

      const toCanvas = (e) => {
        const r = canvas.getBoundingClientRect();
        return [((e.clientX - r.left) * size) / r.width, ((e.clientY - r.top) * size) / r.height];
      };
      const paintPoint = (x, y) => {
        if (points.length >= trial.max_points_per_trial) return;
        points.push([x, y, now()]);
        const half = Math.floor(trial.brush_px / 2);
        ctx.fillStyle = "rgba(255, 196, 0, 0.45)";
        ctx.fillRect(x - half, y - half, trial.brush_px, trial.brush_px);
      };
      const sample = () => {
        if (!painting || !cursor || finished) return;
        const [cx, cy] = [clamp(cursor[0]), clamp(cursor[1])];
        const last = points[points.length - 1];
        if (!last) {
          paintPoint(cx, cy);
        } else {
          const d = Math.hypot(cx - last[0], cy - last[1]);
          if (d < 1) return;
          const steps = Math.max(1, Math.ceil(d / Math.max(1, trial.brush_px / 2)));
          for (let i = 1; i <= steps; i++) {
            paintPoint(clamp(last[0] + ((cx - last[0]) * i) / steps), clamp(last[1] + ((cy - last[1]) * i) / steps));
          }
        }
        maybeAsk();
      };
      const maybeAsk = async () => {
        if (inFlight || finished || points.length - queried < trial.points_per_query) return;
        inFlight = true;
        queried = points.length;
        const sent = points.slice();
        const tSent = sent[sent.length - 1][2];
        let answer = null;
        try {
          answer = await trial.ask_partner(sent, trialId);
        } catch (err) {
          answer = null; // a lost answer only delays the partner; the painting goes on
        }
        inFlight = false;
        if (finished) return;
        if (answer) {
          // guess null: the partner sees nothing it can name yet (stored as null, shown as such)
          const guess = answer.guess === null || answer.guess === undefined ? null : String(answer.guess);
          const recorded = { n_points: sent.length, t: tSent, guess, correct: guess !== null && !!answer.correct };
          if (answer.proof) recorded.proof = String(answer.proof); // the server's signature: returned with the trial
          answers.push(recorded);
          partnerEl.textContent = guess === null ? "Partner: nothing yet…"
            : recorded.correct ? `Partner: “${guess}”: recognized!` : `Partner: “${guess}”?`;
          partnerEl.classList.toggle("correct", recorded.correct);
          if (recorded.correct) {
            const score = Math.round(Math.max(0, 1 - tSent / limitMs) * 1000) / 10;
            finish("recognized", score);
            return;
          }
        }
        maybeAsk();
      };

      const onDown = (e) => {
        if (finished || e.button !== 0) return;
        painting = true;
        cursor = toCanvas(e);
        canvas.setPointerCapture(e.pointerId);
        sample();
      };
      const onMove = (e) => {
        cursor = toCanvas(e);
      };
      const onUp = () => {
        painting = false;
      };
      canvas.addEventListener("pointerdown", onDown);
      canvas.addEventListener("pointermove", onMove);
      canvas.addEventListener("pointerup", onUp);
      canvas.addEventListener("pointercancel", onUp);
      skipBtn.addEventListener("click", () => finish("skipped", 0), { once: true });

      const sampler = setInterval(sample, trial.sample_interval_ms);
      const limitTimer = setTimeout(() => finish("timeout", 0), limitMs);
      let frame = 0;
      const tick = () => {
        const left = Math.max(0, limitMs - (performance.now() - t0));
        timerFill.style.width = `${(100 * left) / limitMs}%`;
        timerFill.classList.toggle("low", left < limitMs * 0.25);
        timeText.textContent = `${(left / 1000).toFixed(1)} s`;
        if (!finished) frame = requestAnimationFrame(tick);
      };
      frame = requestAnimationFrame(tick);

      await done;
      clearInterval(sampler);
      clearTimeout(limitTimer);
      cancelAnimationFrame(frame);
      painting = false;
      skipBtn.disabled = true;
      canvas.removeEventListener("pointerdown", onDown);

      const data = {
        trial_id: trialId,
        stimulus_id: trial.stimulus_id,
        category: trial.category,
        position: trial.position,
        practice: trial.practice,
        points: points,
        partner: answers,
        outcome: finished.outcome,
        score: finished.score,
        duration_ms: finished.t,
      };
      const feedback = {
        recognized: `Your partner recognized it! +${data.score.toFixed(1)} points`,
        timeout: "Time is up: no points for this drawing.",
        skipped: "Skipped.",
      }[data.outcome];
      partnerEl.textContent = finished.outcome === "recognized" ? partnerEl.textContent : feedback;
      statusEl.textContent = "Saving…";
      await trial.save(data, (message) => (statusEl.textContent = message));
      if (!data.practice) scoreEl.textContent = `Score: ${Math.round(trial.score_total + data.score)}`;
      statusEl.textContent = feedback;
      await sleep(900);
      return data;
    }
  }
  ClickMePlugin.info = info;
  return ClickMePlugin;
})(jsPsychModule);
